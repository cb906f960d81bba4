"""Published-optima benchmark: the matcher vs a plain single-model CP-SAT on every GAP instance.

    python -m bench.gap_bench --time-limit 10            # run (resumable), then print tables
    python -m bench.gap_bench --time-limit 60 --families D E
    python -m bench.gap_bench --report 10 60              # tables from recorded runs only

Both solvers get the same time limit and the same number of workers, one instance at a time.
Every assignment is checked against the capacities and its cost recomputed before it is
recorded; the relative gap is measured against ``best_known.csv``. Results go to
``bench/results/gap-<limit>s.jsonl`` (git-ignored), one line per (instance, sense, solver).
The OR-Library files gapa..gapd hold the same 24 instances as the Yagiura files of types A-D
with n <= 200 (token-identical, see the dataset README), so those are run once, by their
Yagiura name.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import time
from pathlib import Path

from ortools.sat.python import cp_model

from matcher.cli_gap import solve_gap
from matcher.gap import GapInstance, agents_of, gap_objective, read_gap_file, to_model
from matcher.gap_solve import warm_up
from matcher.solver import SolverParams, solve
from matcher.verify import verify_assignment

RESULTS = Path(__file__).parent / "results"
FAMILIES = ("gap1-12", "A", "B", "C", "D", "E")
# matcher: the GAP path (`cdmo gap`); generic: the market solver on the GAP model (the GAP
# path before the knapsack Lagrangian and tabu search); plain-cpsat: the textbook model.
SOLVERS = ("matcher", "plain-cpsat", "generic")


def data_dir() -> Path:
    default = Path(__file__).resolve().parents[2] / "shared/datasets/gap"
    return Path(os.environ.get("GAP_DATA", default))


def family_of(file: str) -> str:
    name = Path(file).name
    return "gap1-12" if name.startswith("gap") else name[0].upper()


def plain_cpsat(
    instance: GapInstance, sense: str, time_limit: float, workers: int, seed: int
) -> dict:
    """The baseline: the textbook CP-SAT model, no hint, no decomposition."""
    started = time.perf_counter()
    m, n = instance.agents, instance.jobs
    model = cp_model.CpModel()
    x = [[model.new_bool_var(f"x_{i}_{j}") for j in range(n)] for i in range(m)]
    for j in range(n):
        model.add_exactly_one(x[i][j] for i in range(m))
    for i in range(m):
        model.add(
            sum(int(instance.weight[i, j]) * x[i][j] for j in range(n)) <= int(instance.capacity[i])
        )
    cost = sum(int(instance.cost[i, j]) * x[i][j] for i in range(m) for j in range(n))
    model.minimize(cost) if sense == "min" else model.maximize(cost)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit
    solver.parameters.num_workers = workers
    solver.parameters.random_seed = seed
    status = solver.solve(model)
    record = {"status": solver.status_name(status).lower(), "bound": solver.best_objective_bound}
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        agents = [next(i for i in range(m) if solver.boolean_value(x[i][j])) for j in range(n)]
        record["objective"] = gap_objective(instance, agents)  # checked and recomputed
    else:
        record["objective"] = None
    record["seconds"] = round(time.perf_counter() - started, 3)
    return record


def generic_solver(instance: GapInstance, sense: str, params: SolverParams) -> dict:
    """The market solver (CP-SAT portfolio, LNS, capacity Lagrangian) on the GAP model."""
    started = time.perf_counter()
    model = to_model(instance, sense)  # type: ignore[arg-type]
    solution = solve(model, params)
    record: dict = {"status": str(solution.status)}
    if solution.status in ("optimal", "feasible"):
        verify_assignment(model, solution.choice)
        record["objective"] = gap_objective(instance, agents_of(instance, solution.choice))
    else:
        record["objective"] = None
    record["bound"] = -solution.bound if sense == "min" else solution.bound
    record["seconds"] = round(time.perf_counter() - started, 3)
    return record


def instances(families: list[str], names: list[str] | None = None) -> list[dict]:
    """Rows of best_known.csv to run, minus the gapa..gapd duplicates."""
    rows = []
    with open(data_dir() / "best_known.csv") as handle:
        for row in csv.DictReader(handle):
            if Path(row["file"]).name in {"gapa.txt", "gapb.txt", "gapc.txt", "gapd.txt"}:
                continue
            if names is not None:
                if row["instance_name"] in names:
                    rows.append(row)
            elif family_of(row["file"]) in families:
                rows.append(row)
    return rows


def relative_gap(objective: float | None, best: float, sense: str) -> float | None:
    if objective is None:
        return None
    return (objective - best) / best if sense == "min" else (best - objective) / best


def run(
    limit: float,
    families: list[str],
    workers: int,
    seed: int,
    names: list[str] | None = None,
    solvers: tuple[str, ...] = SOLVERS[:2],
    tag: str = "",
) -> Path:
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"gap-{limit:g}s{tag}.jsonl"
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done.add((r["instance"], r["sense"], r["solver"]))
    cache: dict[str, list[GapInstance]] = {}
    params = SolverParams(time_limit_s=limit, workers=workers, seed=seed)
    warm_up()  # Numba compilation is not part of any instance's time
    for row in instances(families, names):
        path = data_dir() / row["file"]
        problems = cache.setdefault(row["file"], read_gap_file(path))
        instance = problems[int(row["problem_index"]) - 1]
        for solver in solvers:
            key = (row["instance_name"], row["objective_sense"], solver)
            if key in done:
                continue
            sense = row["objective_sense"]
            if solver == "matcher":
                result = solve_gap(instance, sense, params)
                result.pop("assignment", None)
            elif solver == "generic":
                result = generic_solver(instance, sense, params)
            else:
                result = plain_cpsat(instance, sense, limit, workers, seed)
            best = float(row["best_known"])
            record = {
                "instance": row["instance_name"],
                "family": family_of(row["file"]),
                "sense": sense,
                "solver": solver,
                "limit": limit,
                "best_known": best,
                "objective": result["objective"],
                "bound": result["bound"],
                "status": result["status"],
                "seconds": result["seconds"],
                "gap": relative_gap(result["objective"], best, sense),
            }
            with out.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            print(
                f"{record['instance']:>10} {sense} {solver:<11} obj={record['objective']} "
                f"best={best:g} gap={record['gap']} {record['seconds']}s",
                flush=True,
            )
    return out


def report(limits: list[float], tag: str = "") -> str:
    """Markdown: per family and limit, mean/max gap and optimal hits for both solvers."""
    lines = [
        "| family | limit | instances | matcher mean gap | matcher max gap | matcher at best-known"
        " | plain CP-SAT mean gap | plain max gap | plain at best-known | matcher better / worse |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for limit in limits:
        path = RESULTS / f"gap-{limit:g}s{tag}.jsonl"
        if not path.exists():
            continue
        records = [json.loads(line) for line in path.read_text().splitlines()]
        by_key = {(r["instance"], r["sense"], r["solver"]): r for r in records}
        for family in FAMILIES:
            keys = sorted({(r["instance"], r["sense"]) for r in records if r["family"] == family})
            pairs = [(by_key.get((*k, "matcher")), by_key.get((*k, "plain-cpsat"))) for k in keys]
            # Rows with the matcher alone (a run without plain CP-SAT) still count for it.
            alone = [a for a, b in pairs if a and not b]
            pairs = [(a, b) for a, b in pairs if a and b]
            if not pairs and not alone:
                continue

            def stats(rs: list[dict]) -> tuple[str, str, str]:
                gaps = [r["gap"] for r in rs]
                missing = sum(g is None for g in gaps)
                real = [g for g in gaps if g is not None]
                mean = f"{100 * statistics.mean(real):.3f}%" if real else "-"
                worst = f"{100 * max(real):.3f}%" if real else "-"
                hits = f"{sum(g is not None and g <= 1e-12 for g in gaps)}/{len(gaps)}"
                if missing:
                    mean += f" ({missing} without solution)"
                return mean, worst, hits

            ours = stats([a for a, _ in pairs] + alone)
            plain = stats([b for _, b in pairs]) if pairs else ("-", "-", "-")

            def better(a: dict, b: dict) -> int:
                ga = float("inf") if a["gap"] is None else a["gap"]
                gb = float("inf") if b["gap"] is None else b["gap"]
                return (ga < gb - 1e-12) - (ga > gb + 1e-12)

            wins = sum(better(a, b) > 0 for a, b in pairs)
            losses = sum(better(a, b) < 0 for a, b in pairs)
            lines.append(
                f"| {family} | {limit:g} s | {len(pairs) + len(alone)} | {ours[0]} | {ours[1]} | "
                f"{ours[2]} | {plain[0]} | {plain[1]} | {plain[2]} | {wins} / {losses} |"
            )
    return "\n".join(lines)


def per_instance(limits: list[float], tag: str = "") -> str:
    """Markdown: one row per instance and limit, every solver's objective, gap and bound."""
    lines = []
    for limit in limits:
        path = RESULTS / f"gap-{limit:g}s{tag}.jsonl"
        if not path.exists():
            continue
        records = [json.loads(line) for line in path.read_text().splitlines()]
        solvers = [s for s in SOLVERS if any(r["solver"] == s for r in records)]
        lines.append(
            "| instance | limit | best known | "
            + " | ".join(f"{s} objective (gap) [bound]" for s in solvers)
            + " |"
        )
        lines.append("|---|---|---:|" + "---:|" * len(solvers))
        by_key = {(r["instance"], r["sense"], r["solver"]): r for r in records}
        for key in sorted({(r["instance"], r["sense"]) for r in records}):
            cells = []
            for solver in solvers:
                r = by_key.get((*key, solver))
                if r is None or r["objective"] is None:
                    cells.append("-")
                    continue
                bound = r["bound"]
                bound_s = "-" if bound is None else f"{bound:.0f}"
                cells.append(f"{r['objective']:g} ({100 * r['gap']:.3f}%) [{bound_s}]")
            best = by_key[(*key, solvers[0])]["best_known"] if (*key, solvers[0]) in by_key else 0
            lines.append(f"| {key[0]} | {limit:g} s | {best:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", type=float, default=10.0)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--report",
        type=float,
        nargs="+",
        metavar="LIMIT",
        help="only print the tables for these recorded limits",
    )
    parser.add_argument(
        "--instances",
        nargs="+",
        metavar="NAME",
        help="only these instances (e.g. d10200 e40400); overrides --families",
    )
    parser.add_argument(
        "--solvers",
        nargs="+",
        default=list(SOLVERS[:2]),
        choices=SOLVERS,
        help="solvers to run (generic: the pre-Lagrangian GAP path)",
    )
    parser.add_argument("--tag", default="", help="suffix of the results file (gap-<limit>s<tag>)")
    args = parser.parse_args()
    if args.report:
        print(report(args.report, args.tag))
        print(per_instance(args.report, args.tag))
        return
    run(
        args.time_limit,
        args.families,
        args.workers,
        args.seed,
        args.instances,
        tuple(args.solvers),
        args.tag,
    )
    print(report([args.time_limit], args.tag))
    print(per_instance([args.time_limit], args.tag))


if __name__ == "__main__":
    main()
