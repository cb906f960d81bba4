"""The matcher's one entry point: MarketSnapshot in, verified MatchResult out.

build_problem (encode + kernels + model) -> solver.solve -> verify_assignment (always: the
objective reported is the verifier's, never the solver's) -> explain -> MatchResult.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from matcher.complete import complete
from matcher.control import RunControl
from matcher.explain import explain
from matcher.model import NONE
from matcher.pricing import extend_problem, market_bound
from matcher.problem import (
    ROLE_SECOND,
    MarketProblem,
    build_problem,
    find_candidates,
)
from matcher.solver import Solution, SolverParams, solve
from matcher.verify import verify_assignment
from schemas.market import (
    Assignment,
    MarketSnapshot,
    MatchResult,
    Role,
    RunParams,
    SolveStatus,
)


def solver_params(params: RunParams) -> SolverParams:
    return SolverParams(
        time_limit_s=params.time_limit_s,
        workers=params.workers,
        seed=params.seed,
        deterministic=params.deterministic,
    )


def assignments(problem: MarketProblem, choice: np.ndarray) -> list[Assignment]:
    enc, model = problem.enc, problem.model
    out = []
    for r in np.flatnonzero(choice != NONE):
        c = int(choice[r])
        s = int(model.cand_bin[c])
        out.append(
            Assignment(
                project_id=enc.project_ids[enc.row_project[r]],
                site_id=enc.site_ids[s],
                cdmo_id=enc.cdmo_ids[enc.sites.cdmo[s]],
                role=Role.SECOND_SOURCE if enc.row_role[r] == ROLE_SECOND else Role.PRIMARY,
                share=float(enc.row_share[r]),
                value=float(model.cand_value[c]),
                cost=float(problem.cand_cost[c]),
            )
        )
    return out


def item_upper_bound(problem: MarketProblem) -> int:
    """Sum over items of their best candidate or outside value (>= 0): valid for any answer."""
    model = problem.model
    best = np.maximum(model.outside_best, 0)
    has = np.diff(model.cand_ptr) > 0
    if has.any():
        top = np.maximum.reduceat(model.cand_value, model.cand_ptr[:-1][has])
        best[has] = np.maximum(best[has], top)
    return int(best.sum())


def result(
    snapshot: MarketSnapshot,
    problem: MarketProblem,
    solution: Solution,
    *,
    solve_s: float,
    t_start: float,
) -> MatchResult:
    """Verify ``solution`` against the model, explain what is left, and package it all."""
    t0 = time.perf_counter()
    choice = np.asarray(solution.choice, dtype=np.int64)
    objective = verify_assignment(problem.model, choice)
    t1 = time.perf_counter()
    unassigned = explain(problem, choice)
    placed = assignments(problem, choice)
    t2 = time.perf_counter()
    bound = int(solution.bound)
    status = solution.status
    notes = list(problem.notes)
    if bound < objective:
        # Never report a bound the verified answer beats: fall back to a bound that holds for
        # any assignment, and say so (this is a solver defect, not a property of the market).
        notes.append(
            f"solver bound {bound} is below the verified objective {objective}: "
            "replaced by the per-item upper bound"
        )
        bound = max(objective, item_upper_bound(problem))
    if status == SolveStatus.OPTIMAL and objective < bound:
        status = SolveStatus.FEASIBLE
    timings = dict(problem.timings)
    timings["solve"] = solve_s
    timings.update({f"solve.{k}": float(v) for k, v in solution.timings.items()})
    timings["verify"] = t1 - t0
    timings["explain"] = t2 - t1
    timings["total"] = t2 - t_start
    stats = dict(problem.stats)
    stats.update({f"solve.{k}": float(v) for k, v in solution.stats.items()})
    stats["assigned_projects"] = float(len({a.project_id for a in placed}))
    stats["unassigned_projects"] = float(len(unassigned))
    return MatchResult(
        snapshot_version=snapshot.version,
        status=status,
        objective=float(objective),
        bound=float(bound),
        gap=(bound - objective) / max(1.0, abs(bound)),
        assignments=placed,
        unassigned=unassigned,
        timings=timings,
        stats=stats,
        notes=notes,
    )


# Shares of the time limit for the successive solves: on the candidate lists by value, then
# after each round of pricing (column generation) has added sites with room. The last solve
# takes whatever is left.
ROUND_SHARES = (0.3, 0.35)


def _warm_start(old: MarketProblem, new: MarketProblem, choice: np.ndarray) -> np.ndarray:
    """``choice`` (candidate indices of ``old``) as candidate indices of ``new``."""
    site = np.full(len(choice), -1, dtype=np.int64)
    placed = choice != NONE
    site[placed] = old.model.cand_bin[choice[placed]]
    return find_candidates(new.model.cand_ptr, new.model.cand_bin, site)


def match(
    snapshot: MarketSnapshot, params: RunParams, control: RunControl | None = None
) -> MatchResult:
    """Assign the snapshot's projects to sites; raises SnapshotError for an unusable snapshot.

    Column generation around the solver: solve on each project's best sites by value; price
    the capacity with the solve's Lagrangian prices and add each project's best sites by
    reduced value (where there is still room); solve again from the previous answer; repeat
    while pricing finds new sites. The bound is finally taken over every eligible pair of the
    market (``market_bound``), not just over the candidates.
    """
    if control is None:
        control = RunControl(params.time_limit_s, deterministic=params.deterministic)
    t_start = time.perf_counter()
    control.report("encode")
    problem = build_problem(snapshot, params)
    # A round of pricing costs a kernel pass and a model rebuild: about 3x the first pass.
    price_estimate = 3 * problem.timings["kernels"] + problem.timings["model"]
    # Keep time for the final bound (a kernel pass with prices) and the explanations.
    reserve = min(0.25 * params.time_limit_s, 3 * problem.timings["kernels"])
    deadline = t_start + params.time_limit_s - reserve
    solve_s = price_s = 0.0
    added_total = 0
    rounds = 0
    first_feasible: float | None = None
    last = len(ROUND_SHARES)  # index of the final solve, which takes what is left
    step = 0
    while True:
        if params.deterministic:  # fixed shares of the limit, whatever the clock says
            fraction = ROUND_SHARES[step] if step < last else 1.0 - sum(ROUND_SHARES[:rounds])
            budget = params.time_limit_s * fraction
        else:
            left = deadline - time.perf_counter()
            budget = max(0.1, left * ROUND_SHARES[step] if step < last else left)
        t0 = time.perf_counter()
        solution = solve(problem.model, replace(solver_params(params), time_limit_s=budget))
        solve_s += time.perf_counter() - t0
        if rounds == 0 and "first_feasible_s" in solution.stats:
            # Counted from the start of match: encoding and kernels included.
            first_feasible = (t0 - t_start) + solution.stats["first_feasible_s"]
        rounds += 1
        control.report("solve", objective=float(solution.objective), bound=float(solution.bound))
        if step == last or control.cancelled:
            break
        left = deadline - time.perf_counter()
        if not params.deterministic and left < 1.5 * price_estimate:
            # No time for another round of pricing: finish from this answer with what is left.
            problem = replace(problem, model=replace(problem.model, hint=solution.choice))
            step = last
            continue
        t0 = time.perf_counter()
        extended, added = extend_problem(problem, solution.prices)
        price_estimate = time.perf_counter() - t0
        price_s += price_estimate
        added_total += added
        warm = _warm_start(problem, extended, solution.choice)
        problem = replace(extended, model=replace(extended.model, hint=warm))
        # Nothing new to price in: go straight to the final solve with the time left.
        step = step + 1 if added else last
    t0 = time.perf_counter()
    bound = market_bound(problem, solution.prices)
    if bound < solution.bound:
        solution = replace(solution, bound=bound)
    problem.timings.update({"price": price_s, "market_bound": time.perf_counter() - t0})
    t0 = time.perf_counter()
    problem, choice, completed = complete(problem, solution.choice, control)
    solution = replace(solution, choice=choice)
    problem.timings["complete"] = time.perf_counter() - t0
    problem.stats["completed_projects"] = float(completed)
    if first_feasible is not None:
        problem.stats["first_feasible_s"] = first_feasible
    problem.stats["priced_candidates"] = float(added_total)
    problem.stats["rounds"] = float(rounds)
    out = result(snapshot, problem, solution, solve_s=solve_s, t_start=t_start)
    if control.cancelled:
        out = out.model_copy(update={"partial": True})
    control.report("done", objective=out.objective, bound=out.bound, placed=len(out.assignments))
    return out
