"""`cdmo solve` progress: phase, objective, bound and gap live on stderr; stdout is the result."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import typer
from market_factories import project, site, snapshot
from typer.testing import CliRunner

from matcher.cli import register
from matcher.cli_progress import figures
from matcher.control import Progress
from schemas.market import MatchResult


@pytest.fixture(autouse=True)
def no_inherited_log_handlers() -> Iterator[None]:
    """`cdmo solve` sets up no logging of its own; a handler an earlier test of this process
    installed (bound to a stream since closed) must not write into the stderr asserted here."""
    root = logging.getLogger()
    saved, root.handlers = root.handlers, []
    yield
    root.handlers = saved


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture
def snapshot_file(tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "snap.json"
    sites = [site("S1"), site("S2")]
    projects = [project("P1"), project("P2"), project("P3")]
    path.write_text(snapshot(sites, projects).model_dump_json())
    return path


def _solve(app: typer.Typer, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(
        app, ["solve", *args, "--time-limit", "1", "--deterministic", "--seed", "1"]
    )


def test_progress_goes_to_stderr_and_json_stays_clean(app, snapshot_file):  # type: ignore[no-untyped-def]
    res = _solve(app, str(snapshot_file), "--json", "--progress")
    assert res.exit_code == 0, res.stderr
    result = MatchResult.model_validate_json(res.stdout)  # stdout is the JSON alone
    assert "done" in res.stderr and "of 1 s" in res.stderr
    assert f"objective {result.objective:,.0f}" in res.stderr
    assert f"bound {result.bound:,.0f}" in res.stderr
    assert "gap " in res.stderr and f"placed {len(result.assignments)}" in res.stderr


def test_no_progress_when_stderr_is_not_a_terminal(app, snapshot_file):  # type: ignore[no-untyped-def]
    res = _solve(app, str(snapshot_file))
    assert res.exit_code == 0, res.stderr
    assert res.stderr == ""
    assert res.stdout.startswith("status ")
    forced_off = _solve(app, str(snapshot_file), "--no-progress", "--json")
    assert forced_off.stderr == ""


def test_bad_input_with_progress_is_still_one_line(app, tmp_path):  # type: ignore[no-untyped-def]
    res = _solve(app, str(tmp_path / "missing.json"), "--progress")
    assert res.exit_code == 2
    assert res.stderr.strip().count("\n") == 0 and "no such file" in res.stderr


def test_figures_show_what_is_known_so_far() -> None:
    assert figures(Progress("encode", 0.1)) == ""
    line = figures(Progress("solve", 2.0, objective=900.0, bound=1000.0, placed=12))
    assert line == "objective 900  bound 1,000  gap 10.00%  placed 12"
