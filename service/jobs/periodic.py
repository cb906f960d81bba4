"""Periodic jobs of the engine: a clock that turns "every N seconds" into one message per
period.

Time is cut into periods of each task's interval (``period = floor(unix time / interval)``).
:class:`Scheduler` calls ``send(task, period)`` once when a period begins:

* with Redis, ``cdmo scheduler`` (one process; replicas 1) sends a ``housekeeping`` message
  to the workers, and the consumer claims ``(task, period)`` with ``SET NX`` before it sweeps,
  so a second scheduler (a rolling update, an operator's mistake) or a redelivered message
  never makes a second sweep of the same period;
* embedded (no Redis, one API process), the API process runs the same clock and calls the
  same sweep function directly.

Infrastructure only: the sweeps themselves are handed in (:mod:`service.housekeeping`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeriodicTask:
    name: str
    interval_s: float

    def period(self, now: float) -> int:
        return math.floor(now / self.interval_s)

    @property
    def claim_ttl_s(self) -> int:
        """How long the claim of a period is kept: long past its end, then it expires."""
        return max(60, math.ceil(self.interval_s * 10))


class Scheduler:
    """Calls ``send(task, period)`` at the start of each task's period (never twice for one
    period in this process; a failed send is retried on the next tick of the same period)."""

    def __init__(
        self,
        tasks: Sequence[PeriodicTask],
        send: Callable[[PeriodicTask, int], None],
        *,
        name: str = "scheduler",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tasks = list(tasks)
        self.send = send
        self.clock = clock
        self._sent: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.run, name=name, daemon=True)
        shortest = min((t.interval_s for t in self.tasks), default=1.0)
        self.tick_s = min(1.0, max(0.01, shortest / 10))

    def tick(self) -> list[tuple[str, int]]:
        """Send what is due now; returns the ``(task, period)`` pairs sent."""
        now = self.clock()
        sent = []
        for task in self.tasks:
            period = task.period(now)
            if self._sent.get(task.name) == period:
                continue
            try:
                self.send(task, period)
            except Exception:  # noqa: BLE001 - the broker is down: the next tick retries
                log.warning("could not send periodic %s", task.name, exc_info=True)
                continue
            self._sent[task.name] = period
            sent.append((task.name, period))
        return sent

    def run(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.tick_s)

    def start(self) -> Scheduler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
