"""`cdmo generate` and `cdmo solve`: synthetic snapshots, and matching a snapshot file."""

from __future__ import annotations

import signal
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from matcher.control import Progress, RunControl
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


def read_snapshot(file: Path) -> MarketSnapshot:
    """Parse and validate a snapshot file ('-' for stdin); raises typer.Exit with one line."""
    try:
        data = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    except FileNotFoundError:
        raise _fail(f"no such file: {file}") from None
    except (IsADirectoryError, PermissionError, OSError) as exc:
        raise _fail(f"cannot read {file}: {exc.strerror or exc}") from None
    try:
        return MarketSnapshot.model_validate_json(data)
    except ValidationError as exc:
        raise _fail(f"{file}: invalid snapshot: {_one_line(exc)}") from None


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
        snapshot = generate_market(projects, sites, months, seed, start=start,
                                   capacity_scale=capacity_scale)
    except ValueError as exc:  # e.g. a malformed --start
        raise _fail(str(exc)) from None
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
        bool, typer.Option(help="Print each phase's progress to stderr.")
    ] = False,
) -> None:
    """Match the projects of a snapshot to sites; print the result.

    Ctrl-C stops the run: it prints the best verified answer found so far (partial)."""
    snapshot = read_snapshot(file)
    params = RunParams(
        time_limit_s=time_limit,
        workers=workers,
        seed=seed,
        deterministic=deterministic,
        candidates_per_project=candidates,
    )
    def show(p: Progress) -> None:
        gap = "" if p.gap is None else f" gap {p.gap:.4%}"
        typer.echo(f"{p.elapsed_s:8.2f}s {p.phase:<13} objective {p.objective} "
                   f"bound {p.bound} placed {p.placed}{gap}", err=True)

    control = RunControl(time_limit, deterministic=deterministic,
                         on_progress=show if progress else None)
    main = threading.current_thread() is threading.main_thread()  # signals: main thread only
    previous = signal.signal(signal.SIGINT, lambda *_: control.cancel()) if main else None
    try:
        result = match(snapshot, params, control)
    except SnapshotError as exc:
        raise _fail(f"{file}: {exc}") from None
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
    typer.echo(result.model_dump_json() if as_json else _summary(result))
