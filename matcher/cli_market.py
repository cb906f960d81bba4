"""`cdmo generate` and `cdmo solve`: synthetic snapshots, and matching a snapshot file."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TransferSpeedColumn,
)

from matcher.cli_progress import SolveProgress
from matcher.control import RunControl
from matcher.generate import generate_market
from matcher.market import match
from matcher.problem import SnapshotError
from schemas.market import MarketSnapshot, MatchResult, RunParams


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _one_line(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "document"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}".replace("\n", " ")


_CHUNK = 4 << 20  # bytes read between two progress updates


def _read_bytes(file: Path, console: Console | None) -> bytes:
    """The file's bytes; on a terminal with a Rich bar over the bytes read."""
    if str(file) == "-":
        return sys.stdin.buffer.read()
    if console is None or not console.is_terminal:
        return file.read_bytes()
    size = file.stat().st_size
    columns = (
        TextColumn("{task.description:<8}", style="bold"),
        BarColumn(bar_width=30),
        DownloadColumn(),
        TransferSpeedColumn(),
    )
    chunks = []
    with Progress(*columns, console=console, transient=True) as bar, file.open("rb") as f:
        task = bar.add_task("load", total=size)
        while chunk := f.read(_CHUNK):
            chunks.append(chunk)
            bar.advance(task, len(chunk))
    return b"".join(chunks)


def read_snapshot(file: Path, console: Console | None = None) -> MarketSnapshot:
    """Parse and validate a snapshot file ('-' for stdin); raises typer.Exit with one line.

    With ``console`` (the progress display of `cdmo solve`): a bar while the bytes are read
    on a terminal, then one line with the time it took, the size and what the market holds
    (``  1.23s  load  412.5 MB: 100,000 projects, 10,000 sites``)."""
    started = time.perf_counter()
    try:
        data = _read_bytes(file, console)
    except FileNotFoundError:
        raise _fail(f"no such file: {file}") from None
    except (IsADirectoryError, PermissionError, OSError) as exc:
        raise _fail(f"cannot read {file}: {exc.strerror or exc}") from None
    try:
        if console is not None and console.is_terminal:
            with console.status("validating the snapshot"):
                snapshot = MarketSnapshot.model_validate_json(data)
        else:
            snapshot = MarketSnapshot.model_validate_json(data)
    except ValidationError as exc:
        raise _fail(f"{file}: invalid snapshot: {_one_line(exc)}") from None
    if console is not None:
        console.print(
            f"{time.perf_counter() - started:7.2f}s  load  {len(data) / 1e6:,.1f} MB: "
            f"{len(snapshot.projects):,} projects, {len(snapshot.sites):,} sites",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    return snapshot


def generate(
    projects: Annotated[int, typer.Option(min=0, help="Number of projects.")] = 100,
    sites: Annotated[int, typer.Option(min=0, help="Number of CDMO sites.")] = 20,
    months: Annotated[int, typer.Option(min=1, max=120, help="Horizon in months.")] = 12,
    seed: Annotated[int, typer.Option(min=0, help="Same seed, same market.")] = 0,
    start: Annotated[str, typer.Option(help="First horizon month, YYYY-MM.")] = "2026-01",
    capacity_scale: Annotated[
        float, typer.Option(min=0.01, max=100, help="Scale every site's capacity (tight < 1).")
    ] = 1.0,
) -> None:
    """Print a synthetic market snapshot (JSON) to stdout."""
    try:
        snapshot = generate_market(
            projects, sites, months, seed, start=start, capacity_scale=capacity_scale
        )
    except ValueError as exc:  # e.g. a malformed --start, or more than the bounds allow
        raise _fail(str(exc)) from None
    except MemoryError:
        raise _fail("not enough memory to generate that market; ask for fewer") from None
    typer.echo(snapshot.model_dump_json())


def _summary(result: MatchResult) -> str:
    lines = [
        f"status {result.status}  objective {result.objective:.0f}  bound {result.bound:.0f}  "
        f"gap {result.gap:.4%}",
        f"assigned {int(result.stats.get('assigned_projects', 0))} projects "
        f"({len(result.assignments)} placements), unassigned {len(result.unassigned)}",
    ]
    reasons = Counter(str(u.reason) for u in result.unassigned)
    if reasons:
        lines.append("unassigned by reason: " + ", ".join(f"{r} {n}" for r, n in reasons.items()))
    lines.append(
        "timings: " + ", ".join(f"{k} {v:.3f}s" for k, v in result.timings.items() if "." not in k)
    )
    if result.partial:
        lines.append("partial: stopped before the time limit, best verified answer so far")
    lines.extend(f"note: {n}" for n in result.notes)
    return "\n".join(lines)


def solve(
    file: Annotated[Path, typer.Argument(help="Snapshot JSON file, or - for stdin.")],
    time_limit: Annotated[float, typer.Option(min=0.01, max=3600, help="Seconds.")] = 30.0,
    workers: Annotated[int, typer.Option(min=1, max=64)] = 2,
    seed: Annotated[int, typer.Option(min=0, max=2**31 - 1)] = 0,
    deterministic: Annotated[
        bool, typer.Option(help="One worker, fixed seed: the same answer every run.")
    ] = False,
    candidates: Annotated[
        int, typer.Option(min=1, max=256, help="Candidate sites kept per project.")
    ] = 16,
    as_json: Annotated[bool, typer.Option("--json", help="Print the MatchResult as JSON.")] = False,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="Live phase, objective, bound and gap on stderr (default: if it is a terminal).",
        ),
    ] = None,
) -> None:
    """Match the projects of a snapshot to sites; print the result.

    Ctrl-C stops the run: it prints the best verified answer found so far (partial)."""
    console = Console(stderr=True)
    show = progress if progress is not None else console.is_terminal
    snapshot = read_snapshot(file, console if show else None)
    params = RunParams(
        time_limit_s=time_limit,
        workers=workers,
        seed=seed,
        deterministic=deterministic,
        candidates_per_project=candidates,
    )
    main = threading.current_thread() is threading.main_thread()  # signals: main thread only
    control = RunControl(params.time_limit_s, deterministic=params.deterministic)
    previous = signal.signal(signal.SIGINT, lambda *_: control.cancel()) if main else None
    try:
        if show:
            with SolveProgress(params.time_limit_s, console) as live:
                control.on_progress = live.on_progress
                result = match(snapshot, params, control)
        else:
            result = match(snapshot, params, control)
    except SnapshotError as exc:
        raise _fail(f"{file}: {exc}") from None
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
    typer.echo(result.model_dump_json() if as_json else _summary(result))
