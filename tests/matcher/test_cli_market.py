"""`cdmo generate` and `cdmo solve` through Typer's test runner (on a minimal app)."""

from __future__ import annotations

import json

import pytest
import typer
from market_factories import project, site, snapshot
from typer.testing import CliRunner

from matcher.cli import register
from schemas.market import MarketSnapshot, MatchResult


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def test_solve_progress_goes_to_stderr_phase_by_phase(app, runner, tmp_path):
    path = tmp_path / "snap.json"
    path.write_text(snapshot([site("S1")], [project("P1")]).model_dump_json())
    res = runner.invoke(app, ["solve", str(path), "--time-limit", "1", "--progress"])
    assert res.exit_code == 0, res.stderr
    # Not a terminal: first the load ("  0.01s  load  0.0 MB: 1 projects, 1 sites"), then one
    # line per report, "  0.12s of 1 s  phase  figures".
    load, *reports = res.stderr.splitlines()
    assert load.split()[1] == "load" and load.endswith("1 projects, 1 sites"), load
    phases = [line.split()[4] for line in reports]
    assert phases[:3] == ["encode", "kernels", "build"] and phases[-1] == "done"
    assert "status" in res.stdout


def test_generate_prints_a_valid_snapshot(app, runner):
    res = runner.invoke(app, ["generate", "--projects", "12", "--sites", "5", "--seed", "3"])
    assert res.exit_code == 0, res.stderr
    snap = MarketSnapshot.model_validate_json(res.stdout)
    assert len(snap.projects) == 12 and len(snap.sites) == 5


def test_solve_json_prints_a_match_result(app, runner, tmp_path):
    path = tmp_path / "snap.json"
    path.write_text(snapshot([site("S1")], [project("P1"), project("P2")]).model_dump_json())
    res = runner.invoke(
        app, ["solve", str(path), "--time-limit", "1", "--deterministic", "--seed", "1", "--json"]
    )
    assert res.exit_code == 0, res.stderr
    result = MatchResult.model_validate_json(res.stdout)
    assert {a.project_id for a in result.assignments} == {"P1", "P2"}
    assert result.bound >= result.objective > 0
    assert {"encode", "kernels", "solve", "explain"} <= set(result.timings)


def test_solve_summary_names_reasons(app, runner, tmp_path):
    path = tmp_path / "snap.json"
    path.write_text(snapshot([site("S1")], [project("P1", excluded=("C-S1",))]).model_dump_json())
    res = runner.invoke(app, ["solve", str(path), "--time-limit", "1"])
    assert res.exit_code == 0, res.stderr
    assert "unassigned 1" in res.stdout and "excluded 1" in res.stdout


def test_generate_then_solve_pipes(app, runner, tmp_path):
    gen = runner.invoke(app, ["generate", "--projects", "30", "--sites", "8", "--months", "4"])
    path = tmp_path / "snap.json"
    path.write_text(gen.stdout)
    res = runner.invoke(app, ["solve", str(path), "--time-limit", "1", "--workers", "1", "--json"])
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    assert len(data["assignments"]) + len(data["unassigned"]) >= 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("{not json", "invalid snapshot"),
        ('{"version": 1}', "invalid snapshot"),
        ('{"version": 1, "as_of": "2026-01-01", "sites": [], "listings": [], "projects": [],'
         ' "typo": 1}', "typo"),
        (b"\xff\xfe\x00", "invalid snapshot"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_on_stderr(app, runner, tmp_path, content, message):
    path = tmp_path / "snap.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    res = runner.invoke(app, ["solve", str(path)])
    assert res.exit_code == 2
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in res.stderr


def test_snapshot_that_cannot_be_matched_is_one_line(app, runner, tmp_path):
    long = snapshot([site("S1")], [project("P1", start="2020-01"), project("P2", start="2031-01")])
    path = tmp_path / "snap.json"
    path.write_text(long.model_dump_json())
    res = runner.invoke(app, ["solve", str(path)])
    assert res.exit_code == 2 and "months" in res.stderr and len(res.stderr.splitlines()) == 1


def test_directory_is_one_line(app, runner, tmp_path):
    res = runner.invoke(app, ["solve", str(tmp_path)])
    assert res.exit_code == 2 and res.stderr.startswith("error: ")


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--projects", "100000000000"], "at most 2000000 projects"),
        (["--sites", "99999999999999999999"], "at most 2000000 projects, 200000 sites"),
        (["--projects", "1000000", "--sites", "200000", "--months", "120"], "monthly figures"),
    ],
)
def test_generate_with_a_huge_count_fails_with_one_line(app, runner, args, fragment):
    res = runner.invoke(app, ["generate", *args])
    assert res.exit_code == 2
    assert res.stdout == ""
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: ")
    assert fragment in res.stderr
