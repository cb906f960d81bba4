"""The runs' heartbeat comes from a process of its own (service.jobs.heartbeat): a worker
that holds the GIL cannot silence it, a worker killed with ``kill -9`` silences it at once,
and a cancel or a lost claim reaches the worker within a fraction of a second.

A stand-in worker (a subprocess of this test) owns a HeartbeatProcess and holds the GIL in
one long C call (a catastrophically backtracking regular expression, the same effect as a
Numba kernel without ``nogil``); this process watches ``heartbeat_at`` in the database.
"""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import text

from service.db import Database, upgrade
from service.models import MatchRun, utcnow

WORKER = textwrap.dedent(
    """
    import re, sys, time
    from service.jobs.heartbeat import HeartbeatConfig, HeartbeatProcess

    url, run_id, hold_s, stall_s = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    beats = HeartbeatProcess(
        HeartbeatConfig(url, interval_s=0.2, cancel_poll_s=0.1, stall_timeout_s=stall_s)
    )
    assert beats.start(wait_s=60), "the heartbeat process did not start"
    beats.watch(run_id, "tok", lambda kind: print("event", kind, time.monotonic(), flush=True))
    def one_match(n):
        t = time.perf_counter(); re.match(r"(a+)+$", "a" * n + "b")
        return time.perf_counter() - t
    n = 16
    while one_match(n) <= 0.1:  # calibrate: each extra "a" doubles the time of one match
        n += 1
    # The fastest of a few tries (a busy machine only inflates a measurement), and rounded up:
    # the GIL is then held between hold_s and twice that, never shorter.
    took = min(one_match(n) for _ in range(3))
    n += max(0, __import__("math").ceil(__import__("math").log2(hold_s / max(took, 1e-3))))
    time.sleep(1.0)
    print("pid", beats.pid, flush=True)
    print("holding", flush=True)
    re.match(r"(a+)+$", "a" * n + "b")
    print("released", flush=True)
    time.sleep(120)
    """
)


@dataclass
class StandIn:
    proc: subprocess.Popen[str]
    lines: queue.Queue[tuple[float, str]] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), line.strip()))

    def wait_for(self, prefix: str, timeout_s: float = 60) -> tuple[float, str]:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {prefix!r} line from the stand-in worker")
            at, line = self.lines.get(timeout=left)
            if line.startswith(prefix):
                return at, line


@pytest.fixture
def database(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'beat.db'}")
    upgrade(db.engine)
    return db


def _claimed_run(db: Database, run_id: str) -> None:
    with db.session() as session:
        now = utcnow()
        session.add(
            MatchRun(
                id=run_id,
                status="running",
                created_by="org_x",
                worker_id="tok",
                attempts=1,
                started_at=now,
                heartbeat_at=now,
            )
        )
        session.commit()


def _heartbeat_at(db: Database, run_id: str) -> object:
    with db.engine.connect() as conn:
        return conn.execute(
            text("SELECT heartbeat_at FROM match_runs WHERE id = :id"), {"id": run_id}
        ).scalar_one()


@contextmanager
def _stand_in(database: Database, *, hold_s: float, stall_s: float) -> Iterator[StandIn]:
    _claimed_run(database, "run_beat")
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, database.url, "run_beat", str(hold_s), str(stall_s)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield StandIn(proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture
def stand_in(database: Database) -> Iterator[StandIn]:
    with _stand_in(database, hold_s=2, stall_s=600) as worker:
        yield worker


def _beats_until_released(database: Database, worker: StandIn) -> tuple[float, float, list[float]]:
    """(held from, released at, times heartbeat_at changed) while the stand-in holds the GIL."""
    held_from, _ = worker.wait_for("holding")
    changes: list[float] = []
    last = _heartbeat_at(database, "run_beat")
    while True:
        time.sleep(0.05)
        now = _heartbeat_at(database, "run_beat")
        if now != last:
            changes.append(time.monotonic())
            last = now
        try:
            at, line = worker.lines.get_nowait()
            if line == "released":
                return held_from, at, changes
        except queue.Empty:
            if time.monotonic() - held_from > 120:
                raise AssertionError("the stand-in never released the GIL") from None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_worker_holding_the_gil_keeps_beating_and_kill_9_stops_the_beats(
    database: Database, stand_in: StandIn
) -> None:
    _, line = stand_in.wait_for("pid")
    child = int(line.split()[1])
    held_from, released_at, changes = _beats_until_released(database, stand_in)
    during = [t for t in changes if held_from < t < released_at]
    held = released_at - held_from
    assert held > 1.0, f"the GIL was held only {held:.2f} s: calibration too short"
    # Beats every 0.2 s while the worker's interpreter was blocked for over a second.
    assert len(during) >= 3, (held, changes)

    # kill -9 of the worker: the heartbeat process sees its pipe close and exits.
    stand_in.proc.send_signal(signal.SIGKILL)
    stand_in.proc.wait(timeout=10)
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the heartbeat process outlived its worker"
    frozen = _heartbeat_at(database, "run_beat")
    time.sleep(1.0)
    assert _heartbeat_at(database, "run_beat") == frozen


def test_cancel_and_lost_claim_reach_the_worker_within_a_second(
    database: Database, stand_in: StandIn
) -> None:
    stand_in.wait_for("released")
    asked = time.monotonic()
    with database.engine.begin() as conn:
        conn.execute(text("UPDATE match_runs SET cancel_requested = true WHERE id = 'run_beat'"))
    at, line = stand_in.wait_for("event cancel", timeout_s=10)
    assert at - asked < 2.0, at - asked  # polled every 0.1 s; loose for a loaded machine
    # The reaper gives the run to another worker: this one hears its claim is lost.
    with database.engine.begin() as conn:
        conn.execute(text("UPDATE match_runs SET worker_id = 'other' WHERE id = 'run_beat'"))
    stand_in.wait_for("event lost", timeout_s=10)


def test_a_worker_stuck_longer_than_the_stall_timeout_stops_being_beaten(
    database: Database,
) -> None:
    """Alive but stuck (no ping from the worker for ``stall_timeout_s``): its runs' beats stop,
    so the reaper takes them; they resume when the worker comes back."""
    with _stand_in(database, hold_s=5, stall_s=1.0) as worker:
        held_from, released_at, changes = _beats_until_released(database, worker)
        assert released_at - held_from > 4.5, "calibration too short for this test"
        early = [t for t in changes if t < held_from + 0.8]
        # Margin for a loaded machine: a beat decided just before the stall timeout may land
        # (and be seen here) a second or two later.
        late = [t for t in changes if held_from + 3.5 < t < released_at]
        assert early, changes  # still beaten within the stall timeout
        assert late == [], (held_from, released_at, changes)  # then silent: reapable
        resumed = _heartbeat_at(database, "run_beat")
        deadline = time.monotonic() + 10
        while _heartbeat_at(database, "run_beat") == resumed:
            assert time.monotonic() < deadline, "beats did not resume after the stall"
            time.sleep(0.1)
