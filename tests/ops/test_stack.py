"""`make stack` (deploy/stack.sh): the production topology on one machine under honcho,
against the real PostgreSQL and Redis, with a short load test run against it.

Only the API processes are started here (PROCESSES=api): the worker line of the Procfile runs
`cdmo worker`, which comes with the match-runs work.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from ops_testkit import (
    BIN,
    ROOT,
    LiveServer,
    child_pids,
    demo_keys,
    free_port,
    stop,
    unavailable,
    wait_until_ready,
)
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from service.config import normalise_database_url

API_PROCESSES = 2


def _services() -> tuple[str, str]:
    db_url, redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
    if not db_url or not normalise_database_url(db_url).startswith("postgresql"):
        unavailable("DATABASE_URL (PostgreSQL) is not set: the stack test needs it")
    if not redis_url:
        unavailable("REDIS_URL is not set: the stack test needs it")
    assert db_url and redis_url
    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        unavailable(f"Redis at {redis_url} is unreachable: {exc}")
    return normalise_database_url(db_url), redis_url


def _drop_database(server_url: str, name: str) -> None:
    engine = create_engine(
        make_url(server_url).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    except OperationalError:
        pass
    finally:
        engine.dispose()


def _delete_keys(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
    keys = list(client.scan_iter(match=prefix + "*", count=500))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, int]]:
    db_server, redis_url = _services()
    name = f"cdmo_stack_{uuid.uuid4().hex[:8]}"  # created by stack.sh itself, as on a fresh box
    prefix = f"cdmo-stack-test:{uuid.uuid4().hex[:8]}:"
    port = free_port()
    log = tmp_path_factory.mktemp("stack") / "stack.log"
    env = {
        **os.environ,
        "VENV": os.path.relpath(BIN.parent, ROOT),  # the venv running these tests
        if Path(BIN).is_relative_to(ROOT)
        else ".venv",
        "DATABASE_URL": make_url(db_server)
        .set(database=name)
        .render_as_string(hide_password=False),
        "REDIS_URL": redis_url,
        "CDMO_REDIS__KEY_PREFIX": prefix,
        "CDMO_RATE_LIMIT__REQUESTS": "1000000",
        "PORT": str(port),
        "API_PROCESSES": str(API_PROCESSES),
        "PROCESSES": "api",
        "PYTHONUNBUFFERED": "1",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["bash", str(ROOT / "deploy" / "stack.sh")],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url + "/ready", timeout_s=120, proc=proc)
        server = LiveServer(url=url, keys=demo_keys(log.read_text()), log=log)
        assert server.keys.get("operator"), log.read_text()
        yield server, proc.pid
    finally:
        stop(proc)
        _drop_database(db_server, name)
        _delete_keys(redis_url, prefix)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _api_processes(honcho_pid: int) -> list[int]:
    """The uvicorn worker processes: honcho -> honcho -> sh -> cdmo serve -> spawned workers."""
    level = [honcho_pid]
    for _ in range(6):
        level = [child for pid in level for child in child_pids(pid)]
        serve = [pid for pid in level if b"cdmo\x00serve" in _cmdline(pid)]
        if serve:
            return [c for c in child_pids(serve[0]) if b"spawn_main" in _cmdline(c)]
    return []


def test_stack_runs_several_api_processes_against_postgres_and_redis(
    stack: tuple[LiveServer, int],
) -> None:
    server, honcho_pid = stack
    ready = httpx.get(server.url + "/ready").json()
    assert ready["status"] == "ready"
    assert ready["database"] == "postgresql"
    assert ready["store"] == "redis"
    assert len(_api_processes(honcho_pid)) == API_PROCESSES
    headers = {"Authorization": f"Bearer {server.key('maker')}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
        answers = [client.get("/v1/projects").status_code for _ in range(20)]
    assert answers == [200] * 20


def test_the_load_test_runs_against_the_stack(
    stack: tuple[LiveServer, int], tmp_path: Path
) -> None:
    server, _ = stack
    env = {
        **os.environ,
        "CDMO_MAKER_KEY": server.key("maker"),
        "CDMO_CDMO_KEY": server.key("cdmo"),
        "CDMO_OPERATOR_KEY": server.key("operator"),
    }
    started = time.monotonic()
    result = subprocess.run(
        [
            str(BIN / "locust"),
            "-f",
            str(ROOT / "loadtests" / "locustfile.py"),
            "--host",
            server.url,
            "--headless",
            "-u",
            "6",
            "-r",
            "6",
            "-t",
            "8s",
            "--only-summary",
            "--csv",
            str(tmp_path / "load"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert time.monotonic() - started < 120
    summary = (tmp_path / "load_stats.csv").read_text().splitlines()
    total = next(line for line in summary if ",Aggregated," in line).split(",")
    header = summary[0].split(",")
    requests, failures = (
        int(total[header.index("Request Count")]),
        int(total[header.index("Failure Count")]),
    )
    assert requests > 0 and failures == 0, summary
