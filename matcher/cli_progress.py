"""Live progress of `cdmo solve` on standard error (Rich): phase, time used of the limit, and
the best objective, bound and gap so far, fed by ``RunControl(on_progress=...)``.

Standard output stays the result alone (the summary, or the JSON of ``--json``), so scripts
can pipe it while a person watches the progress.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType

from rich.console import Console, RenderableType
from rich.progress import (
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress_bar import ProgressBar
from rich.text import Text

from matcher.control import Progress as SolveReport


class _TimeLimitBar(ProgressColumn):
    """The share of the time limit used so far: moves with the clock, not with reports."""

    def render(self, task: Task) -> RenderableType:
        total = task.total or 1.0
        used = min(task.elapsed or 0.0, total) if not task.finished else total
        return ProgressBar(total=total, completed=used, width=30)


def figures(report: SolveReport) -> str:
    """``objective 1,234  bound 1,300  gap 5.08%  placed 12`` (what is known so far)."""
    parts = []
    if report.objective is not None:
        parts.append(f"objective {report.objective:,.0f}")
    if report.bound is not None:
        parts.append(f"bound {report.bound:,.0f}")
    if report.gap is not None:
        parts.append(f"gap {report.gap:.2%}")
    if report.placed is not None:
        parts.append(f"placed {report.placed:,}")
    return "  ".join(parts)


class _TwoLineProgress(Progress):
    """The bar line, then the figures on a line of their own (they are wide)."""

    figures = ""

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        if self.figures:
            yield Text("  " + self.figures)


class SolveProgress:
    """Context manager; pass :meth:`on_progress` to ``RunControl(on_progress=...)``.

    On a terminal: a live Rich display. Elsewhere (a log file, a pipe, CI): one plain line per
    report, ``  1.23s of 10 s  phase  figures``, so the log keeps every phase.
    """

    def __init__(self, time_limit_s: float, console: Console) -> None:
        self.time_limit_s = time_limit_s
        self.last: SolveReport | None = None
        self._console = console
        self._live = console.is_terminal
        self._progress = _TwoLineProgress(
            SpinnerColumn(finished_text="✓"),
            TextColumn("{task.fields[phase]:<8}", style="bold"),
            _TimeLimitBar(),
            TimeElapsedColumn(),
            TextColumn(f"of {time_limit_s:g} s"),
            console=console,
        )
        self._task = self._progress.add_task("solve", total=time_limit_s, phase="start")

    def __enter__(self) -> SolveProgress:
        if self._live:
            self._progress.start()
        return self

    def on_progress(self, report: SolveReport) -> None:
        """Called by the matcher (from whichever thread reports); Rich locks internally."""
        self.last = report
        if not self._live:
            line = f"{report.elapsed_s:7.2f}s of {self.time_limit_s:g} s  {report.phase:<13}"
            self._console.print(
                f"{line} {figures(report)}", markup=False, highlight=False, soft_wrap=True
            )
            return
        self._progress.figures = figures(report)
        self._progress.update(self._task, phase=report.phase)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._live:
            return
        if exc_type is None:
            self._progress.update(self._task, completed=self.time_limit_s)
        self._progress.stop()
