#!/usr/bin/env bash
# One command for the production topology on one machine, without containers:
#   make stack [API_PROCESSES=2] [WORKERS=2] [PORT=8000] [DEMO=1] [PROCESSES="api worker scheduler"]
# against the local PostgreSQL (DATABASE_URL, default database `cdmo`, created if missing) and
# Redis (REDIS_URL). Migrates once, then honcho supervises API_PROCESSES API processes (one
# uvicorn, one port), WORKERS match workers (`cdmo worker`) and one scheduler (`cdmo
# scheduler`: the periodic expiry and webhook jobs the workers run); Ctrl-C stops them all.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV_BIN="$(pwd)/${VENV:-.venv}/bin"
export PATH="$VENV_BIN:$PATH"

export DATABASE_URL="${DATABASE_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/cdmo}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
export CDMO_API_PROCESSES="${API_PROCESSES:-2}"
export CDMO_STACK_HOST="${HOST:-127.0.0.1}"
export CDMO_STACK_PORT="${PORT:-8000}"
export CDMO_LOG_FORMAT="${CDMO_LOG_FORMAT:-json}"
if [ "${DEMO:-1}" = "1" ]; then export CDMO_STACK_DEMO="--demo"; else export CDMO_STACK_DEMO=""; fi
WORKERS="${WORKERS:-2}"
# The API processes add their metrics up in this folder (prometheus_client multiprocess mode);
# it must start empty.
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-$(mktemp -d -t cdmo-metrics.XXXXXX)}"
rm -rf "${PROMETHEUS_MULTIPROC_DIR:?}"/*

# Create the database when it does not exist (a fresh machine has only the server).
python - <<'PY'
import os
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from service.config import normalise_database_url

url = make_url(normalise_database_url(os.environ["DATABASE_URL"]))
if url.get_backend_name() == "postgresql":
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": url.database}).scalar():
            conn.execute(text(f'CREATE DATABASE "{url.database}"'))
            print(f"created database {url.database}")
    admin.dispose()
PY
cdmo db upgrade
# shellcheck disable=SC2086  # PROCESSES is a list of process names
exec honcho --procfile deploy/Procfile --app-root . start --concurrency "api=1,worker=$WORKERS,scheduler=1" ${PROCESSES:-}
