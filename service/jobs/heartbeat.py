"""Heartbeats from a process of their own, which a busy solver cannot silence.

A worker process (``cdmo worker``, or a process of the embedded pool) owns one small child,
``python -m service.jobs.heartbeat``, and tells it over a pipe which runs it holds. The child
refreshes ``heartbeat_at`` of each every ``heartbeat_interval_s`` and polls the run's cancel
flag every ``cancel_poll_s``; it answers ``cancel`` or ``lost`` (the claim was taken by the
reaper) on its stdout, which a thread of the worker turns into ``RunControl.cancel()``.

Why a process: a solver phase that holds the GIL (Numba kernels, CP-SAT's Python callbacks)
on a starved machine kept the old heartbeat *thread* silent for 20 s and got live runs reaped.
The child has its own interpreter and needs no GIL of the worker's.

What still stops the beats, so the reaper keeps its meaning:

* the worker dies (``kill -9``, lost machine): the pipe closes, the child sees end of file
  and exits at once (and checks its parent id every tick as well), so the run's heartbeat
  stops within the tick and the reaper takes it after ``heartbeat_timeout_s``;
* the worker is alive but stuck (no ping from it for ``worker_stall_timeout_s``, a bound far
  above any GIL-held phase): the child stops beating its runs and they are reaped.

Infrastructure only: the child talks to the runs table through ``service.repositories``; it
imports neither flows nor routes, and never the matcher.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

log = logging.getLogger(__name__)

#: Events the child sends for a run; READY (no run) once it is up.
CANCEL, LOST, READY = "cancel", "lost", "ready"

OnEvent = Callable[[str], None]


@dataclass(frozen=True)
class HeartbeatConfig:
    database_url: str
    interval_s: float = 1.0
    cancel_poll_s: float = 0.2
    stall_timeout_s: float = 600.0


class HeartbeatProcess:
    """The worker's side: starts the child on first use, registers runs, pings it, and calls
    each run's ``on_event(kind)`` from a reader thread. A child that dies is started again
    and told the runs it had."""

    def __init__(self, config: HeartbeatConfig) -> None:
        self.config = config
        self._lock = threading.RLock()
        self._runs: dict[str, tuple[str, OnEvent]] = {}
        self._proc: subprocess.Popen[str] | None = None
        self._closed = False
        self._pinger: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self, *, wait_s: float = 0.0) -> bool:
        """Start the child now (a worker does it at start, so no run waits for its imports);
        wait up to ``wait_s`` for it to be ready. Returns whether it is."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._spawn()
        return self._ready.wait(wait_s) if wait_s > 0 else self._ready.is_set()

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def watch(self, run_id: str, token: str, on_event: OnEvent) -> None:
        with self._lock:
            self._runs[run_id] = (token, on_event)
            self._send({"op": "start", "run_id": run_id, "token": token})

    def unwatch(self, run_id: str) -> None:
        with self._lock:
            if self._runs.pop(run_id, None) is not None:
                self._send({"op": "stop", "run_id": run_id})

    def close(self) -> None:
        with self._lock:
            self._closed = True
            proc, self._proc = self._proc, None
        if proc is not None:
            _close_quietly(proc.stdin)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    # --- internals ----------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        """Write one line to the child (starting it if needed); the caller holds the lock."""
        if self._closed:
            return
        for _ in range(2):
            proc = self._proc if self._proc is not None and self._proc.poll() is None else None
            if proc is None:
                proc = self._spawn()
                if message.get("op") == "start":
                    return  # _spawn told the new child every watched run, this one included
            try:
                assert proc.stdin is not None
                proc.stdin.write(json.dumps(message) + "\n")
                proc.stdin.flush()
                return
            except (BrokenPipeError, OSError, ValueError):
                log.warning("heartbeat process gone; starting another")
                self._proc = None

    def _spawn(self) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.jobs.heartbeat"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            close_fds=True,
        )
        assert proc.stdin is not None
        lines = [json.dumps({"op": "config", **self.config.__dict__})]
        lines += [
            json.dumps({"op": "start", "run_id": run_id, "token": token})
            for run_id, (token, _) in self._runs.items()
        ]
        proc.stdin.write("\n".join(lines) + "\n")
        proc.stdin.flush()
        self._proc = proc
        self._ready.clear()
        threading.Thread(
            target=self._read, args=(proc,), name="heartbeat-reader", daemon=True
        ).start()
        if self._pinger is None:
            self._pinger = threading.Thread(target=self._ping, name="heartbeat-ping", daemon=True)
            self._pinger.start()
        log.info("heartbeat process %d started", proc.pid)
        return proc

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                message = json.loads(line)
                if message.get("event") == READY:
                    self._ready.set()
                    continue
                run_id, kind = message["run_id"], message["event"]
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            with self._lock:
                entry = self._runs.get(run_id)
                if kind == LOST:
                    self._runs.pop(run_id, None)
            if entry is not None:
                try:
                    entry[1](kind)
                except Exception:  # noqa: BLE001 - a callback bug must not stop the reader
                    log.exception("heartbeat event handler failed", extra={"run_id": run_id})
        proc.wait()
        time.sleep(min(1.0, self.config.interval_s))  # no tight loop if the child cannot start
        with self._lock:
            if self._closed or self._proc is not proc:
                return
            self._proc = None
            if self._runs:  # runs still held: beat them from a new child at once
                log.warning("heartbeat process %d exited; starting another", proc.pid)
                self._spawn()

    def _ping(self) -> None:
        """Tell the child this process is alive (not stuck): once per interval."""
        while not self._closed:
            time.sleep(self.config.interval_s)
            with self._lock:
                if self._proc is not None and self._runs:
                    self._send({"op": "ping"})


def _close_quietly(stream: IO[str] | None) -> None:
    if stream is not None:
        try:
            stream.close()
        except OSError:
            pass


# --- the child ------------------------------------------------------------------------------


class _ChildState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: dict[str, str] = {}  # run id -> claim token
        self.next_beat: dict[str, float] = {}
        self.cancel_sent: set[str] = set()
        self.last_ping = time.monotonic()


def _emit(run_id: str | None, event: str) -> None:
    sys.stdout.write(json.dumps({"run_id": run_id, "event": event}) + "\n")
    sys.stdout.flush()


def _read_commands(state: _ChildState) -> None:
    for line in sys.stdin:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        with state.lock:
            state.last_ping = time.monotonic()
            op = message.get("op")
            if op == "start":
                state.runs[message["run_id"]] = message["token"]
                state.next_beat[message["run_id"]] = 0.0
                state.cancel_sent.discard(message["run_id"])
            elif op == "stop":
                state.runs.pop(message["run_id"], None)
    os._exit(0)  # end of file: the worker is gone (or closed us): stop beating now


def main() -> None:
    """``python -m service.jobs.heartbeat``: first stdin line is the config, then commands."""
    first = sys.stdin.readline()
    if not first:
        return
    config = json.loads(first)
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s heartbeat %(process)d: %(message)s"
    )
    from service import repositories as repo
    from service.db import Database
    from service.repositories.runs import LostClaim

    db = Database(config["database_url"])
    interval, poll = float(config["interval_s"]), float(config["cancel_poll_s"])
    stall = float(config["stall_timeout_s"])
    parent = os.getppid()
    state = _ChildState()
    threading.Thread(target=_read_commands, args=(state,), daemon=True).start()
    holding = False
    _emit(None, READY)
    while True:
        time.sleep(poll)
        if os.getppid() != parent:
            os._exit(0)
        now = time.monotonic()
        with state.lock:
            runs = dict(state.runs)
            parent_alive = now - state.last_ping < stall
        if not runs:
            if holding:  # idle: hold no database connection until the next run
                db.engine.dispose()
                holding = False
            continue
        holding = True
        for run_id, token in runs.items():
            try:
                with db.session() as session:
                    if parent_alive and now >= state.next_beat.get(run_id, 0.0):
                        cancel = repo.runs.heartbeat(session=session, run_id=run_id, token=token)
                        session.commit()
                        state.next_beat[run_id] = now + interval
                    else:
                        cancel = repo.runs.cancel_requested(session=session, run_id=run_id)
            except LostClaim:
                with state.lock:
                    state.runs.pop(run_id, None)
                _emit(run_id, LOST)
                continue
            except Exception:  # noqa: BLE001 - a database blip: try again next tick
                log.warning("heartbeat failed for run %s", run_id, exc_info=True)
                continue
            if cancel and run_id not in state.cancel_sent:
                state.cancel_sent.add(run_id)
                _emit(run_id, CANCEL)


if __name__ == "__main__":
    main()
