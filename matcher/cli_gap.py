"""`cdmo gap`: solve OR-Library / Yagiura GAP files and print one JSON object per problem."""

from __future__ import annotations

import json
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from matcher.gap import GapFormatError, GapInstance, gap_objective, read_gap_file
from matcher.gap_solve import solve_gap_instance, warm_up
from matcher.solver import SolverParams


class SenseOption(StrEnum):
    MIN = "min"
    MAX = "max"


def solve_gap(instance: GapInstance, sense: str, params: SolverParams) -> dict:
    """Solve one instance; the objective is recomputed from the assignment, never trusted."""
    started = time.perf_counter()
    answer = solve_gap_instance(instance, sense, params)  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    record: dict = {
        "agents": instance.agents,
        "jobs": instance.jobs,
        "sense": sense,
        "status": answer.status,
    }
    if answer.agents is not None:
        record["objective"] = gap_objective(instance, answer.agents)  # checked again
        record["assignment"] = answer.agents.tolist()
    else:
        record["objective"] = None
        record["assignment"] = None
    record["bound"] = answer.bound
    record["seconds"] = round(seconds, 3)
    return record


def gap(
    file: Annotated[Path, typer.Argument(help="OR-Library or Yagiura GAP file.")],
    problem: Annotated[
        int | None, typer.Option(help="1-based problem in the file; all if omitted.")
    ] = None,
    sense: Annotated[SenseOption, typer.Option(help="min (types A-E) or max.")] = SenseOption.MIN,
    time_limit: Annotated[float, typer.Option(min=0.01, help="Seconds per problem.")] = 10.0,
    workers: Annotated[int, typer.Option(min=1, max=64)] = 2,
    seed: Annotated[int, typer.Option(min=0)] = 0,
    deterministic: Annotated[
        bool, typer.Option(help="One worker, fixed seed, reproducible.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Solve the GAP problems of FILE and print objective, bound and assignment."""
    try:
        instances = read_gap_file(file)
    except FileNotFoundError:
        typer.echo(f"error: no such file: {file}", err=True)
        raise typer.Exit(2) from None
    except (GapFormatError, IsADirectoryError, PermissionError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if problem is not None and not 1 <= problem <= len(instances):
        typer.echo(f"error: {file.name} has {len(instances)} problem(s), not {problem}", err=True)
        raise typer.Exit(2)
    chosen = range(len(instances)) if problem is None else [problem - 1]
    params = SolverParams(
        time_limit_s=time_limit,
        workers=1 if deterministic else workers,
        seed=seed,
        deterministic=deterministic,
    )
    warm_up()  # Numba kernels compiled or loaded before any clock starts
    for k in chosen:
        record = {"file": file.name, "problem": k + 1}
        record.update(solve_gap(instances[k], sense.value, params))
        if as_json:
            typer.echo(json.dumps(record))
        else:
            typer.echo(
                f"{file.name} #{k + 1}: {record['agents']}x{record['jobs']} {record['status']} "
                f"objective={record['objective']} bound={record['bound']} "
                f"({record['seconds']} s)"
            )
