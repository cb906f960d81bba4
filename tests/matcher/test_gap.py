"""GAP files: the token-stream reader, the model, and published optima through `cdmo gap`."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from matcher.gap import GapFormatError, agents_of, gap_objective, read_gap_file, to_model
from matcher.solver import SolverParams, solve
from matcher.verify import verify_assignment

# One 2-agent, 3-job problem: costs, weights, capacities.
TINY = """2 3
1 2 3
4 5 6
1 1 1
2 2 2
2 5
"""


def gap_data() -> Path:
    """The shared benchmark folder; required in CI, a clear skip elsewhere."""
    default = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "gap"
    folder = Path(os.environ.get("GAP_DATA", default))
    if not (folder / "best_known.csv").exists():
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(f"GAP benchmark data missing at {folder} (set GAP_DATA)")
        pytest.skip(f"GAP benchmark data not found at {folder}; set GAP_DATA to run")
    return folder


def best_known(folder: Path) -> dict[tuple[str, int, str], int]:
    with open(folder / "best_known.csv") as handle:
        return {
            (row["file"], int(row["problem_index"]), row["objective_sense"]): int(row["best_known"])
            for row in csv.DictReader(handle)
        }


def cdmo(*args: str) -> subprocess.CompletedProcess:
    """The installed console script, as operators run it."""
    script = Path(sys.executable).parent / "cdmo"
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=300)


def test_reader_ignores_line_breaks(tmp_path: Path) -> None:
    one_line = tmp_path / "flat"
    one_line.write_text(" ".join(TINY.split()))
    wrapped = tmp_path / "wrapped"
    wrapped.write_text("\n".join(TINY.split()) + "\n")
    a, b = read_gap_file(one_line)[0], read_gap_file(wrapped)[0]
    assert (a.agents, a.jobs) == (2, 3)
    assert np.array_equal(a.cost, b.cost) and np.array_equal(a.weight, [[1, 1, 1], [2, 2, 2]])
    assert list(a.capacity) == [2, 5]


def test_reader_handles_several_problems(tmp_path: Path) -> None:
    multi = tmp_path / "multi"
    multi.write_text("2\n" + TINY + TINY.replace("2 5", "3 3"))
    problems = read_gap_file(multi)
    assert len(problems) == 2 and list(problems[1].capacity) == [3, 3]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2 3 1 2", "expected"),
        ("1 2 x", "not an integer"),
        ("2\n" + TINY, "header"),
        ("1\n" + TINY + " 9", "left after"),
        ("1", "too short"),
    ],
)
def test_reader_rejects_malformed_files(tmp_path: Path, text: str, message: str) -> None:
    bad = tmp_path / "bad"
    bad.write_text(text)
    with pytest.raises(GapFormatError, match=message):
        read_gap_file(bad)


def test_objective_recomputation_checks_capacity(tmp_path: Path) -> None:
    path = tmp_path / "tiny"
    path.write_text(TINY)
    instance = read_gap_file(path)[0]
    assert gap_objective(instance, np.array([0, 0, 1])) == 1 + 2 + 6
    with pytest.raises(ValueError, match="capacity"):
        gap_objective(instance, np.array([0, 0, 0]))  # agent 0 holds 2 units, not 3


@pytest.mark.parametrize("sense", ["min", "max"])
def test_tiny_gap_solves_to_the_enumerated_optimum(tmp_path: Path, sense: str) -> None:
    path = tmp_path / "tiny"
    path.write_text(TINY)
    instance = read_gap_file(path)[0]
    feasible = []
    for code in range(8):
        agents = np.array([(code >> j) & 1 for j in range(3)])
        try:
            feasible.append(gap_objective(instance, agents))
        except ValueError:
            continue
    expected = min(feasible) if sense == "min" else max(feasible)
    model = to_model(instance, sense)  # type: ignore[arg-type]
    solution = solve(model, SolverParams(time_limit_s=5, workers=1))
    verify_assignment(model, solution.choice)
    assert gap_objective(instance, agents_of(instance, solution.choice)) == expected


def test_cli_solves_orlibrary_problems_to_published_optima_both_senses() -> None:
    folder = gap_data()
    known = best_known(folder)
    for sense in ("min", "max"):
        result = cdmo(
            "gap", str(folder / "orlib/gap1.txt"), "--sense", sense, "--time-limit", "5", "--json"
        )
        assert result.returncode == 0, result.stderr
        records = [json.loads(line) for line in result.stdout.splitlines()]
        assert [r["problem"] for r in records] == [1, 2, 3, 4, 5]
        instance_of = read_gap_file(folder / "orlib/gap1.txt")
        for record in records:
            instance = instance_of[record["problem"] - 1]
            assert set(record) >= {
                "file",
                "problem",
                "agents",
                "jobs",
                "sense",
                "objective",
                "bound",
                "assignment",
                "seconds",
            }
            # The objective printed is the cost of the printed assignment, which fits.
            assert gap_objective(instance, np.array(record["assignment"])) == record["objective"]
            assert record["objective"] == known[("orlib/gap1.txt", record["problem"], sense)]
            assert record["status"] == "optimal"


def test_cli_solves_a_type_a_instance_to_its_optimum() -> None:
    folder = gap_data()
    known = best_known(folder)
    result = cdmo(
        "gap", str(folder / "yagiura/a05100"), "--problem", "1", "--time-limit", "20", "--json"
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["objective"] == known[("yagiura/a05100", 1, "min")]
    assert record["bound"] <= record["objective"]


def test_cli_deterministic_mode_reproduces_the_answer() -> None:
    folder = gap_data()
    args = (
        "gap",
        str(folder / "orlib/gap12.txt"),
        "--problem",
        "2",
        "--deterministic",
        "--time-limit",
        "1",
        "--json",
    )
    first, second = cdmo(*args), cdmo(*args)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["assignment"] == json.loads(second.stdout)["assignment"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/nonexistent/gapfile"], "no such file"),
        (["{bad}", "--problem", "9"], "problem"),
        (["{garbage}"], "not an integer"),
    ],
)
def test_cli_bad_input_is_one_line_and_nonzero(
    tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "tiny").write_text(TINY)
    (tmp_path / "garbage").write_text("1 2 three")
    args = [
        a.replace("{bad}", str(tmp_path / "tiny")).replace("{garbage}", str(tmp_path / "garbage"))
        for a in args
    ]
    result = cdmo("gap", *args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr
