"""Helpers of the operations tests: a live server started through the public CLI, and the
headless Chromium of the machine (Debian's package, never a downloaded browser)."""

from __future__ import annotations

import os
import re
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

import httpx
import pytest

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--disable-extensions",
    # Network closed: no name resolves except the loopback the server listens on.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]
# A demo key line of `cdmo serve --demo`, alone or behind honcho's "api.1  | " prefix.
_KEY_LINE = re.compile(r"(?:^|\| )\s+(operator|maker|cdmo)\s+(.+?)\s+(ck_\S+)$")


def unavailable(reason: str) -> None:
    """Skip, or fail when the run promised every dependency (REQUIRE_SERVICES=1)."""
    if REQUIRE_SERVICES:
        pytest.fail(f"REQUIRE_SERVICES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def chromium_path() -> str:
    """The system Chromium (apt package ``chromium``; .ci/run installs it)."""
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    unavailable("Chromium is not installed (apt-get install chromium chromium-driver)")
    raise AssertionError("unreachable")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_ready(
    url: str,
    *,
    timeout_s: float = 60.0,
    proc: subprocess.Popen | None = None,  # type: ignore[type-arg]
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode} before answering {url}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer 200 within {timeout_s} s")


def stop(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
    """SIGTERM the process group we started, SIGKILL after 10 s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def demo_keys(output: str) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in output.splitlines():
        match = _KEY_LINE.search(line)
        if match:
            keys.setdefault(match.group(1), []).append(match.group(3))
    return keys


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


@dataclass
class LiveServer:
    url: str
    keys: dict[str, list[str]] = field(default_factory=dict)
    log: Path | None = None

    def key(self, role: str) -> str:
        return self.keys[role][0]


def embedded_env(data_dir: Path) -> dict[str, str]:
    """The environment of a server on the embedded SQLite file and in-process store."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(CDMO_DATA_DIR=str(data_dir), CDMO_RATE_LIMIT__ENABLED="false", PYTHONUNBUFFERED="1")
    return env


@contextmanager
def demo_server(tmp: Path) -> Iterator[LiveServer]:
    """``cdmo serve --demo`` in its own process on a free port, embedded database in ``tmp``."""
    port = free_port()
    log = tmp / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "cdmo"), "serve", "--demo", "--port", str(port)],
            cwd=tmp,
            env=embedded_env(tmp),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url + "/health", proc=proc)
        server = LiveServer(url=url, log=log)
        server.keys = demo_keys(log.read_text())
        assert server.keys.get("operator"), log.read_text()
        yield server
    finally:
        stop(proc)
