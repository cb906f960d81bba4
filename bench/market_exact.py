"""Which side of the market gap is loose: our answer and bound against an exact MIP solve.

    python -m bench.market_exact --projects 1000 --sites 100 --seeds 1,2,3 --mip-limit 120

On markets small enough for a MIP (the eligible pairs of a few thousand projects), each seed
is matched twice with the same limit: as the matcher runs today, and as a baseline without
the split bound and without complete lists (``--baseline`` knobs of SolveParams); then the
complete model (every eligible pair, the second-source links and pair rules as linear rows,
binary placements) goes to SCIP (bundled with OR-Tools) for ``--mip-limit`` seconds. SCIP's
incumbent is a lower bound on the optimum and its bound an upper one, so

    our answer's loss  <= (SCIP bound - our objective) / SCIP bound, and >= (SCIP objective -
    ours) / SCIP objective; our bound's slack >= (our bound - SCIP bound) / our bound.

Every number printed is the verifier's (our answers) or SCIP's own; nothing is timed.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import matcher
from matcher.control import SolveParams
from matcher.generate import generate_market
from matcher.market import match
from matcher.model import AssignmentModel
from matcher.problem import build_problem
from schemas.market import RunParams

# The matcher as it ran before the split bound: capacity prices only, lists of 16 sites.
BASELINE = SolveParams(split_max_work=0, complete_lists_max_pairs=0)


def mip(model: AssignmentModel, limit_s: float) -> tuple[float, float, bool]:
    """SCIP on the model as a MIP: (objective, bound, optimal). Items take at most one
    candidate (exactly one when must_assign); every resource, pair rules included, is a
    capacity row; a linked pair is placed together, at most one candidate of the two per
    bin group (CDMO); pins are kept. Outside options are not modelled: the model must hold
    every eligible pair (``candidates_per_project`` >= the sites)."""
    from ortools.linear_solver import pywraplp

    m = model
    if np.any(m.outside_best > 0):
        raise SystemExit("the model does not hold every eligible pair: raise --k")
    s = pywraplp.Solver.CreateSolver("SCIP")
    s.SetTimeLimit(int(1000 * limit_s))
    x = [s.BoolVar(f"x{c}") for c in range(m.n_cand)]
    objective = s.Objective()
    for c, v in enumerate(m.cand_value.tolist()):
        objective.SetCoefficient(x[c], float(v))
    ptr = m.cand_ptr.tolist()
    for i in range(m.n_items):
        row = s.Constraint(1.0 if m.must_assign[i] else 0.0, 1.0)
        for var in x[ptr[i] : ptr[i + 1]]:
            row.SetCoefficient(var, 1.0)
    cand_of_use = np.repeat(np.arange(m.n_cand), np.diff(m.use_ptr))
    rows: dict[int, object] = {}
    for u, (r, a) in enumerate(zip(m.use_res.tolist(), m.use_amt.tolist(), strict=True)):
        if r not in rows:
            rows[r] = s.Constraint(-s.infinity(), float(m.capacity[r]))
        rows[r].SetCoefficient(x[int(cand_of_use[u])], float(a))  # type: ignore[attr-defined]
    groups = m.bin_group[m.cand_bin].tolist()
    for i in np.flatnonzero(m.partner > np.arange(m.n_items)).tolist():
        p = int(m.partner[i])
        link = s.Constraint(0.0, 0.0)
        by_group: dict[int, list] = {}
        for c in range(ptr[i], ptr[i + 1]):
            link.SetCoefficient(x[c], 1.0)
            by_group.setdefault(groups[c], []).append(x[c])
        for c in range(ptr[p], ptr[p + 1]):
            link.SetCoefficient(x[c], -1.0)
            by_group.setdefault(groups[c], []).append(x[c])
        for members in by_group.values():
            if len(members) > 1:
                row = s.Constraint(0.0, 1.0)
                for var in members:
                    row.SetCoefficient(var, 1.0)
    for c in m.fixed[m.fixed >= 0].tolist():
        x[c].SetLb(1.0)
    objective.SetMaximization()
    status = s.Solve()
    if status not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        return float("nan"), float("nan"), False
    return objective.Value(), objective.BestBound(), status == pywraplp.Solver.OPTIMAL


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--projects", type=int, default=1000)
    ap.add_argument("--sites", type=int, default=100)
    ap.add_argument("--months", type=int, default=12)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--time-limit", type=float, default=10.0, help="our run's limit")
    ap.add_argument("--mip-limit", type=float, default=120.0, help="SCIP's limit")
    ap.add_argument("--capacity-scale", type=float, default=1.0)
    ap.add_argument("--k", type=int, default=256, help="sites per project of the MIP model")
    args = ap.parse_args(argv)
    out = sys.stdout.write
    matcher.warm_up()
    out(
        f"# {args.projects} x {args.sites} x {args.months}, capacity x{args.capacity_scale:g}, "
        f"ours at {args.time_limit:g} s, SCIP at {args.mip_limit:g} s\n\n"
        "| seed | code | objective | bound | gap | SCIP objective | SCIP bound | answer loss | "
        "bound slack >= |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    for seed in [int(x) for x in args.seeds.split(",") if x.strip()]:
        snap = generate_market(
            args.projects, args.sites, args.months, seed, capacity_scale=args.capacity_scale
        )
        params = RunParams(time_limit_s=args.time_limit, workers=2, seed=seed)
        runs = {
            name: match(snap, params, solver=sp) for name, sp in (("base", BASELINE), ("now", None))
        }
        model = build_problem(snap, RunParams(candidates_per_project=args.k)).model
        t0 = time.perf_counter()
        obj, bound, optimal = mip(model, args.mip_limit)
        mip_s = time.perf_counter() - t0
        for name, res in runs.items():
            lo = max(0.0, (obj - res.objective) / obj)
            hi = (bound - res.objective) / bound
            slack = (res.bound - bound) / res.bound
            out(
                f"| {seed} | {name} | {res.objective:,.0f} | {res.bound:,.0f} | {res.gap:.3%} | "
                f"{obj:,.0f} | {bound:,.0f}{' (optimal)' if optimal else ''} | "
                f"{lo:.3%} - {hi:.3%} | {slack:.3%} |\n"
            )
        out(f"<!-- seed {seed}: SCIP {mip_s:.0f} s -->\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
