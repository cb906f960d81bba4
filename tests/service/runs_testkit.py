"""Helpers of the match-run tests: a generated market bulk-loaded into the database, operator
and CDMO keys, real ``cdmo worker`` processes, a private ``redis-server``, waiting loops."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import text

from matcher.generate import generate_market
from schemas.api import OrganisationCreate, OrgKind
from service import repositories as repo
from service.config import Settings
from service.db import Database
from service.models import Organisation

MARKET_START = "2027-01"
FINAL = {"succeeded", "failed", "cancelled"}
MARKET_TABLES = [
    "organisations",
    "api_keys",
    "sites",
    "listings",
    "projects",
    "proposals",
    "market_state",
]
RUN_TABLES = ["match_run_events", "match_run_unassigned", "match_run_assignments", "match_runs"]

# Small but busy enough that a non-deterministic solve uses its whole time limit.
SMALL = {"projects": 60, "sites": 8, "capacity_scale": 1.0}
BUSY = {"projects": 600, "sites": 60, "capacity_scale": 0.3}

FAST_RUNS_ENV = {
    "CDMO_RUNS__HEARTBEAT_INTERVAL_S": "0.5",
    "CDMO_RUNS__HEARTBEAT_TIMEOUT_S": "10",
    "CDMO_RUNS__REAPER_INTERVAL_S": "1",
    "CDMO_RUNS__REQUEUE_AFTER_S": "5",
}


def fast_runs_settings(**overrides: Any) -> dict[str, Any]:
    values = {k.removeprefix("CDMO_RUNS__").lower(): float(v) for k, v in FAST_RUNS_ENV.items()}
    values.update(overrides)
    return values


@dataclass
class Key:
    org_id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def reset_tables(db: Database) -> None:
    with db.engine.begin() as conn:
        if db.dialect == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(RUN_TABLES + MARKET_TABLES[:-1])} CASCADE"))
        else:
            for table in RUN_TABLES + MARKET_TABLES[:-1]:
                conn.execute(text(f"DELETE FROM {table}"))
        conn.execute(text("UPDATE market_state SET version = 0"))


def load_generated(
    db: Database, *, projects: int, sites: int, capacity_scale: float, seed: int = 1
):  # type: ignore[no-untyped-def]
    snapshot = generate_market(
        projects, sites, months=12, seed=seed, start=MARKET_START, capacity_scale=capacity_scale
    )
    with db.session() as session:
        repo.bulk.load_market(session=session, snapshot=snapshot)
        session.commit()
    return snapshot


def make_key(db: Database, settings: Settings, *, kind: OrgKind, org_id: str | None = None) -> Key:
    secret = settings.auth.hmac_secret.get_secret_value()
    with db.session() as session:
        if org_id is None:
            org = repo.orgs.create_org(
                session=session,
                org_in=OrganisationCreate(name=f"{kind.value} {time.time_ns()}", kind=kind),
            )
        else:
            org = session.get(Organisation, org_id)
            assert org is not None
        _, key = repo.orgs.create_api_key(session=session, org=org, label="t", secret=secret)
        session.commit()
    return Key(org.id, key)


def wait_run(
    client: Any, key: Key, run_id: str, statuses: set[str], timeout_s: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        body = client.get(f"/v1/match-runs/{run_id}", headers=key.headers).json()
        if body["status"] in statuses:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {body['status']} after {timeout_s} s: {body}")
        time.sleep(0.2)


def wait_until(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


def read_events(
    client: Any, key: Key, run_id: str, last_event_id: str | None = None
) -> list[tuple[str, str, str]]:
    """(id, event, data) of the whole SSE stream, which must end with the final event."""
    headers = dict(key.headers)
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    out: list[tuple[str, str, str]] = []
    current: dict[str, str] = {}
    with client.stream("GET", f"/v1/match-runs/{run_id}/events", headers=headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                if "event" in current:
                    out.append((current.get("id", ""), current["event"], current.get("data", "")))
                current = {}
                continue
            name, _, value = line.partition(": ")
            current[name] = value
    return out


def table_rows(db: Database, tables: list[str]) -> dict[str, list[Any]]:
    with db.engine.connect() as conn:
        return {
            t: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {t} ORDER BY 1"))]
            for t in tables
        }


# --- processes ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Workers:
    """Real ``cdmo worker`` processes (their PIDs kept; only these are ever killed)."""

    env: dict[str, str]
    log_dir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, n: int = 1) -> None:
        cdmo = Path(sys.executable).parent / "cdmo"
        for _ in range(n):
            log = open(self.log_dir / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
            self.procs.append(
                subprocess.Popen(
                    [str(cdmo), "worker"], env=self.env, stdout=log, stderr=subprocess.STDOUT
                )
            )

    def kill(self, pid: int) -> None:
        for proc in self.procs:
            if proc.pid == pid:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
                return
        raise AssertionError(f"{pid} is not one of our workers")

    def alive(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def logs(self, tail: int | None = 3000) -> str:
        """The workers' logs, the last ``tail`` characters of each (None: whole)."""
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-tail if tail else 0 :]}"
            for p in sorted(self.log_dir.glob("worker-*.log"))
        )


def worker_env(db_url: str, redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDMO_")}
    env.update(
        {
            "DATABASE_URL": db_url,
            "REDIS_URL": redis_url,
            "CDMO_ENV": "test",
            "CDMO_REDIS__KEY_PREFIX": prefix,
            "CDMO_LOG_LEVEL": "INFO",
            **FAST_RUNS_ENV,
            **extra,
        }
    )
    return env


@contextmanager
def private_redis(tmp: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of our own on a free port: the only one a test may flush or restart."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise AssertionError("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    wait_until(lambda: _pings(client), 10, "the private redis-server")
    try:
        yield url, proc
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def http_ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    return response.json() if response.content else {}
