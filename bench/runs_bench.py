"""Match runs end to end, at marketplace scale, through the API with real workers.

    python -m bench.runs_bench                                  # 20000 x 2000 x 12, 60 s
    python -m bench.runs_bench --projects 2000 --sites 200 --time-limit 10 --whatif-limit 5

Needs PostgreSQL (DATABASE_URL: a server; a fresh database is created and dropped) and Redis
(REDIS_URL; keys under a private prefix, deleted at the end).

1. Bulk-load a generated market into PostgreSQL (executemany batches, not the ORM row by row).
2. One run through the API (POST /v1/match-runs, one ``cdmo worker``): timings per phase from
   the run's summary (snapshot from the database, solve, persist, commit of the proposals)
   and the overhead around the solve relative to the time limit.
3. Two what-if runs (dry runs) submitted at once, with 1 worker and then with 2 workers: the
   throughput ratio (runs per second, 2 workers over 1).

Prints one JSON line per measurement and a table; nothing is committed to the repository.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from matcher.generate import generate_market
from schemas.api import OrganisationCreate, OrgKind
from service import repositories as repo
from service.app import create_app
from service.config import RateLimitSettings, RedisSettings, RunsSettings, Settings
from service.db import upgrade
from service.runtime import build_services


def _emit(what: str, **values: Any) -> None:
    print(json.dumps({"what": what, **values}), flush=True)


def _workers(n: int, env: dict[str, str], log_dir: Path) -> list[subprocess.Popen[bytes]]:
    cdmo = Path(sys.executable).parent / "cdmo"
    procs = []
    for i in range(n):
        log = open(log_dir / f"bench-worker-{i}.log", "wb")  # noqa: SIM115
        procs.append(
            subprocess.Popen([str(cdmo), "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)
        )
    return procs


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()


def _wait(
    client: TestClient, headers: dict[str, str], run_id: str, timeout_s: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = client.get(f"/v1/match-runs/{run_id}", headers=headers).json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        time.sleep(0.5)
    raise SystemExit(f"run {run_id} did not finish in {timeout_s} s")


def _seconds(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _warm_up_s(log: Path) -> float | None:
    """The worker's warm-up (at its start, before any run: not part of a run's overhead)."""
    found = re.search(r"warm-up took ([0-9.]+) s", log.read_text(errors="replace"))
    return float(found.group(1)) if found else None


def _ready(client: TestClient, headers: dict[str, str], n: int) -> None:
    """Wait until n workers have warmed up: a tiny dry run each would cost a solve; instead
    give them the time their log says they need (warm-up line)."""
    time.sleep(8 + 2 * n)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--projects", type=int, default=20_000)
    ap.add_argument("--sites", type=int, default=2_000)
    ap.add_argument("--months", type=int, default=12)
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--whatif-limit", type=float, default=20.0)
    ap.add_argument("--solver-workers", type=int, default=1, help="threads per solve")
    ap.add_argument("--skip-whatif", action="store_true")
    args = ap.parse_args(argv)

    server = os.environ.get("DATABASE_URL")
    redis_url = os.environ.get("REDIS_URL")
    if not server or not redis_url:
        raise SystemExit("set DATABASE_URL (PostgreSQL) and REDIS_URL")
    server = server.replace("postgresql://", "postgresql+psycopg://", 1)
    name = f"cdmo_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    db_url = make_url(server).set(database=name).render_as_string(hide_password=False)
    prefix = f"cdmo-bench:{uuid.uuid4().hex[:8]}:"
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / name
    tmp.mkdir(parents=True, exist_ok=True)
    runs = RunsSettings(max_time_limit_s=3600, max_active_runs=10)
    settings = Settings(
        env="test",
        database_url=db_url,
        redis_url=redis_url,
        data_dir=tmp,
        redis=RedisSettings(key_prefix=prefix),
        rate_limit=RateLimitSettings(requests=1_000_000, window_s=60),
        runs=runs,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDMO_")}
    env.update(
        {
            "DATABASE_URL": db_url,
            "REDIS_URL": redis_url,
            "CDMO_ENV": "test",
            "CDMO_REDIS__KEY_PREFIX": prefix,
            "CDMO_RUNS__MAX_TIME_LIMIT_S": "3600",
        }
    )
    load = os.getloadavg()
    _emit("machine", cpus=os.cpu_count(), loadavg=[round(x, 2) for x in load])
    services = build_services(settings)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        upgrade(services.db.engine)
        t0 = time.perf_counter()
        snapshot = generate_market(args.projects, args.sites, months=args.months, seed=1)
        t1 = time.perf_counter()
        with services.db.session() as session:
            counts = repo.bulk.load_market(session=session, snapshot=snapshot)
            op = repo.orgs.create_org(
                session=session, org_in=OrganisationCreate(name="bench op", kind=OrgKind.OPERATOR)
            )
            _, key = repo.orgs.create_api_key(
                session=session,
                org=op,
                label="b",
                secret=settings.auth.hmac_secret.get_secret_value(),
            )
            session.commit()
        with services.db.engine.begin() as conn:
            conn.execute(text("ANALYZE"))
        t2 = time.perf_counter()
        _emit("load", generate_s=round(t1 - t0, 2), load_s=round(t2 - t1, 2), rows=counts)
        headers = {"Authorization": f"Bearer {key}"}
        with TestClient(create_app(settings, services)) as client:
            procs = _workers(1, env, tmp)
            _ready(client, headers, 1)
            params = {"time_limit_s": args.time_limit, "workers": 2, "seed": 1}
            t3 = time.perf_counter()
            run = client.post("/v1/match-runs", json={"params": params}, headers=headers).json()
            done = _wait(client, headers, run["id"], args.time_limit * 4 + 600)
            wall = time.perf_counter() - t3
            s = done["summary"] or {}
            timings = s.get("timings", {})
            # Overhead = everything around the solve's time limit: queueing (submit -> claim),
            # snapshot, persist, commit, the solve's overrun beyond its limit, and the rest
            # (claim, events, summary writes, this loop's 0.5 s polling).
            overhead = wall - min(timings.get("solve", 0.0), args.time_limit)
            queued = _seconds(done["started_at"]) - _seconds(done["created_at"])
            named = ("snapshot", "persist", "commit")
            parts = {k: round(timings.get(k, -1), 2) for k in named}
            overrun = max(0.0, timings.get("solve", 0.0) - args.time_limit)
            other = overhead - queued - overrun - sum(timings.get(k, 0.0) for k in named)
            _emit(
                "run",
                status=done["status"],
                wall_s=round(wall, 2),
                queue_s=round(queued, 2),
                **{f"{k}_s": v for k, v in parts.items()},
                snapshot_store_s=round(timings.get("snapshot_store", -1), 2),
                solve_s=round(timings.get("solve", -1), 2),
                solve_overrun_s=round(overrun, 2),
                other_s=round(other, 2),
                overhead_s=round(overhead, 2),
                overhead_share=round(overhead / args.time_limit, 3),
                loadavg=[round(x, 2) for x in os.getloadavg()],
                worker_warm_up_s=_warm_up_s(tmp / "bench-worker-0.log"),
                commit_parts={k: v for k, v in timings.items() if k.startswith("commit.")},
                proposals=(s.get("commit") or {}).get("proposed"),
                skipped=len((s.get("commit") or {}).get("skipped", [])),
                placed=s.get("placed"),
                gap=s.get("gap"),
                error=done.get("error"),
            )
            _stop(procs)
            procs = []
            if not args.skip_whatif:
                rates = {}
                for n in (1, 2):
                    procs = _workers(n, env, tmp)
                    _ready(client, headers, n)
                    p = {"time_limit_s": args.whatif_limit, "workers": args.solver_workers}
                    t = time.perf_counter()
                    ids = [
                        client.post(
                            "/v1/match-runs", json={"params": p, "dry_run": True}, headers=headers
                        ).json()["id"]
                        for _ in range(2)
                    ]
                    finals = [_wait(client, headers, i, args.whatif_limit * 6 + 300) for i in ids]
                    elapsed = time.perf_counter() - t
                    rates[n] = 2 / elapsed
                    _emit(
                        "whatif",
                        workers=n,
                        elapsed_s=round(elapsed, 2),
                        statuses=[f["status"] for f in finals],
                        loadavg=[round(x, 2) for x in os.getloadavg()],
                    )
                    _stop(procs)
                    procs = []
                _emit("whatif_ratio", ratio=round(rates[2] / rates[1], 3))
    finally:
        _stop(procs)
        services.close()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        client_r = redis.Redis.from_url(redis_url)
        keys = list(client_r.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client_r.delete(*keys)
        client_r.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
