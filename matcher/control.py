"""One run control per solve: the deadline (or deterministic budget), a cancel flag and progress.

Made once by whoever starts a solve (the CLI, a worker, a test) and handed down to every phase.
Any thread may call ``cancel()``; every phase asks ``stop_requested()`` / ``left()`` and returns
its best verified answer so far. Progress goes to one callback as ``Progress`` records.

This module is the contract between the matcher and its callers (``service/flows`` uses it for
match runs): keep its public names stable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Progress:
    """One progress report: what the solve is doing and how good its answer is so far."""

    phase: str  # encode, kernels, build, heuristics, bound, cpsat, lns, price, market_bound, ...
    elapsed_s: float
    objective: float | None = None  # best verified objective so far
    bound: float | None = None  # best proven upper bound so far
    placed: int | None = None  # projects placed in the best answer so far

    @property
    def gap(self) -> float | None:
        if self.objective is None or self.bound is None:
            return None
        return (self.bound - self.objective) / max(1.0, abs(self.bound))


ProgressCallback = Callable[[Progress], None]


@dataclass
class RunControl:
    """Deadline, cancel flag and progress sink of one solve.

    ``time_limit_s`` counts from construction. In deterministic mode the wall clock never cuts a
    phase (phases use fixed shares of ``time_limit_s`` as CP-SAT deterministic time instead),
    but a cancel still stops the run.
    """

    time_limit_s: float
    deterministic: bool = False
    on_progress: ProgressCallback | None = None
    clock: Callable[[], float] = time.perf_counter
    start: float = field(init=False)
    _cancel: threading.Event = field(init=False, default_factory=threading.Event)
    _last: Progress | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.start = self.clock()

    # --- time and cancel ---------------------------------------------------------------
    @property
    def deadline(self) -> float:
        return self.start + self.time_limit_s

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        """Seconds left before the deadline; 0 once cancelled."""
        if self._cancel.is_set():
            return 0.0
        return max(0.0, self.deadline - self.clock())

    def cancel(self) -> None:
        """Ask the solve to stop as soon as it can (safe from any thread)."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def stop_requested(self) -> bool:
        """True once cancelled or (outside deterministic mode) past the deadline."""
        if self._cancel.is_set():
            return True
        return not self.deterministic and self.clock() >= self.deadline

    # --- progress ----------------------------------------------------------------------
    def report(
        self,
        phase: str,
        *,
        objective: float | None = None,
        bound: float | None = None,
        placed: int | None = None,
    ) -> None:
        """Send a progress record; unknown figures keep their last reported value."""
        last = self._last
        if last is not None:
            objective = last.objective if objective is None else objective
            bound = last.bound if bound is None else bound
            placed = last.placed if placed is None else placed
        progress = Progress(phase, self.elapsed(), objective, bound, placed)
        self._last = progress
        if self.on_progress is not None:
            self.on_progress(progress)

    @property
    def last_progress(self) -> Progress | None:
        return self._last
