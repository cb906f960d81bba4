"""Real API processes for the overload, crash and fault tests: uvicorn started as a child
process on a free port, on its own PostgreSQL database, killed by its PID only."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """One uvicorn API process (restartable on the same port and database)."""

    env: dict[str, str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
                "--host", "127.0.0.1", "--port", str(self.port),
                "--no-access-log", "--log-level", "warning",
            ],
            env=self.env,
            cwd=ROOT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the API exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the API did not start")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=20)
        self.proc = None

    def client(self, key: str | None = None, timeout: float = 15) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)


def server_env(database_url: str, redis_url: str | None, **settings: Any) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "CDMO_ENV": "test",
        "CDMO_AUTH__HMAC_SECRET": "server-kit-secret-" + uuid.uuid4().hex,
        "CDMO_REDIS__KEY_PREFIX": f"cdmo-test:srv:{uuid.uuid4().hex[:8]}:",
        "CDMO_RATE_LIMIT__REQUESTS": "1000000",
        "CDMO_LOG_LEVEL": "WARNING",
        "CDMO_DB__QUEUE_TIMEOUT_S": "5",  # tests that want shedding set it lower
        "CDMO_DB__QUEUE_BUDGET_S": "0",  # and no adaptive shedding unless a test asks
    }
    env.pop("REDIS_URL", None)
    if redis_url:
        env["REDIS_URL"] = redis_url
    for name, value in settings.items():
        env[f"CDMO_{name.upper()}"] = str(value)
    return env


def migrate_and_seed(env: dict[str, str]) -> str:
    """What ``cdmo db upgrade`` + ``cdmo seed`` do (in this process: no interpreter start-up):
    the operator key."""
    from service.db import Database, upgrade
    from service.seed import seed_operator

    db = Database(env["DATABASE_URL"])
    try:
        upgrade(db.engine)
        key = seed_operator(db, secret=env["CDMO_AUTH__HMAC_SECRET"]).key
    finally:
        db.dispose()
    assert key is not None
    return key


def cdmo_check(env: dict[str, str]) -> list[str]:
    """The violations `cdmo check` would print (run in this process)."""
    from service.checks import run_checks
    from service.db import Database

    db = Database(env["DATABASE_URL"])
    try:
        return [f"{o.check.name}: {v}" for o in run_checks(db) for v in o.violations]
    finally:
        db.dispose()


@contextmanager
def running(server: Server) -> Iterator[Server]:
    server.start()
    try:
        yield server
    finally:
        server.kill(signal.SIGTERM)
