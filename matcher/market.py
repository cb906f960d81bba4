"""The matcher's one entry point: MarketSnapshot in, verified MatchResult out.

build_problem (encode + kernels + model) -> rounds of solver.solve with column generation in
between (pricing.extend_problem) -> the last pass over every eligible site (complete) ->
verify_assignment (always: the objective reported is the verifier's, never the solver's) ->
explain -> the bound over the whole market (pricing.market_bound, with subgradient steps of
its own when the model's prices say little about the market) -> MatchResult.

Time: one ``RunControl`` carries the deadline of the whole run. Building is done first; the
rest of the time is split so that what must follow the solves (the market bound, verifying,
explaining) is kept back, estimated from what building cost; a pricing round is only started
when its estimated cost fits. A cancel (from any thread) stops the current phase and the run
returns its best verified answer so far with ``partial=True``.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import numpy as np

from matcher.bound import lagrangian_bound, lagrangian_terms, lp_bound
from matcher.complete import complete
from matcher.control import RunControl, SolveParams, Stopped
from matcher.explain import explain
from matcher.kernels import ELIGIBLE, R_CAPACITY
from matcher.model import NONE
from matcher.pricing import extend_problem, market_bound
from matcher.problem import (
    ROLE_SECOND,
    MarketProblem,
    SiteTable,
    build_problem,
    find_candidates,
)
from matcher.solver import MapParts, Solution, solve
from matcher.split_bound import fit_states, split_bound
from matcher.verify import verify_assignment
from schemas.market import (
    Assignment,
    BlockReason,
    MarketSnapshot,
    MatchResult,
    Role,
    RunParams,
    SolveStatus,
    Unassigned,
    trusted_builder,
)


def solve_params(params: RunParams, base: SolveParams | None = None) -> SolveParams:
    """The solver's parameters for a run: the caller's limit, workers, seed and mode over the
    tuned defaults (or ``base``)."""
    return replace(
        base or SolveParams(),
        time_limit_s=params.time_limit_s,
        workers=1 if params.deterministic else params.workers,
        seed=params.seed,
        deterministic=params.deterministic,
    )


# The old name, still imported by callers.
solver_params = solve_params


_assignment = trusted_builder(Assignment)


def assignments(problem: MarketProblem, choice: np.ndarray) -> list[Assignment]:
    """The placements of ``choice`` as ``Assignment`` objects (columns gathered with NumPy
    first, objects made by ``trusted_builder``: 100,000 placements in ~0.15 s at load 6, what
    a cancelled run at that size must still pay)."""
    enc, model = problem.enc, problem.model
    rows = np.flatnonzero(choice != NONE)
    cands = choice[rows]
    sites = model.cand_bin[cands].astype(np.int64)
    project_ids, site_ids, cdmo_ids = enc.project_ids, enc.site_ids, enc.cdmo_ids
    columns = zip(
        enc.row_project[rows].tolist(),
        sites.tolist(),
        enc.sites.cdmo[sites].tolist(),
        (enc.row_role[rows] == ROLE_SECOND).tolist(),
        enc.row_share[rows].tolist(),
        model.cand_value[cands].astype(np.float64).tolist(),
        problem.cand_cost[cands].astype(np.float64).tolist(),
        strict=True,
    )
    # Built without validation: every field comes from already validated data.
    primary, second_source = Role.PRIMARY, Role.SECOND_SOURCE
    return [
        _assignment(
            {
                "project_id": project_ids[j],
                "site_id": site_ids[s],
                "cdmo_id": cdmo_ids[d],
                "role": second_source if second else primary,
                "share": share,
                "value": value,
                "cost": cost,
            }
        )
        for j, s, d, second, share, value, cost in columns
    ]


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
    control: RunControl | None = None,
    explain_grace_s: float | None = None,
) -> MatchResult:
    """Verify ``solution`` against the model, explain what is left, and package it all.

    Explanations stop (the rest listed as not explained) once ``control`` is cancelled or,
    outside deterministic mode, ``explain_grace_s`` past its deadline.
    """
    t0 = time.perf_counter()
    choice = np.asarray(solution.choice, dtype=np.int64)
    objective = verify_assignment(problem.model, choice)
    t1 = time.perf_counter()
    stop = None
    if control is not None:
        ctl = control
        late = ctl.deadline + (explain_grace_s or 0.0)
        stop = lambda: ctl.cancelled or (not ctl.deterministic and ctl.clock() > late)  # noqa: E731
        ctl.report("verify", objective=float(objective))
    unassigned = explain(problem, choice, stop=stop)
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


def _warm_start(old: MarketProblem, new: MarketProblem, choice: np.ndarray) -> np.ndarray:
    """``choice`` (candidate indices of ``old``) as candidate indices of ``new``."""
    site = np.full(len(choice), -1, dtype=np.int64)
    placed = choice != NONE
    site[placed] = old.model.cand_bin[choice[placed]]
    return find_candidates(new.model.cand_ptr, new.model.cand_bin, site)


def _nothing_placed(problem: MarketProblem) -> Solution:
    """The empty answer (always feasible) with the per-item bound: what a run stopped before
    its first solve returns."""
    model = problem.model
    return Solution(
        choice=np.full(model.n_items, NONE, dtype=np.int64),
        objective=0,
        bound=item_upper_bound(problem),
        status=SolveStatus.FEASIBLE,
        prices=np.zeros(model.n_res),
    )


def _after_solve_s(problem: MarketProblem, sp: SolveParams, unplaced_rows: int) -> float:
    """Estimated seconds for verifying, explaining and packaging an answer, in units of what
    encoding took in this run (both are Python-bound over the same projects, so the estimate
    follows the machine's load); rows without an eligible site that fail on capacity are
    explained against every site. The last pass (matcher.complete) scans each unplaced
    project against its category's sites as its explanation does: counted twice."""
    encode_s = problem.timings.get("encode", 0.0)
    counts = problem.scored.counts
    alone = int(np.count_nonzero((counts[:, ELIGIBLE] == 0) & (counts[:, R_CAPACITY] > 0)))
    unplaced_share = unplaced_rows / max(1, problem.model.n_items)
    return (
        encode_s * (sp.result_encode_passes + 2 * sp.explain_encode_passes * unplaced_share)
        + sp.explain_s_per_row_site * alone * problem.enc.sites.n_sites
    )


# Reasons that hold whatever the capacity: no pair of sources in the whole market respects
# the separation rule, or none is within the budget.
STRUCTURAL = (BlockReason.NO_SECOND_SOURCE, BlockReason.BUDGET)


def _without_structural(
    problem: MarketProblem, out: MatchResult, total: float, terms: np.ndarray
) -> float:
    """The Lagrangian bound ``total`` less the terms of the projects that ``out`` explains as
    unplaceable in the whole market whatever the capacity (``STRUCTURAL``): they are out of
    every feasible answer, so their terms (each >= 0: they may stay out) only loosen it. The
    explanations scan every site of the market, so this needs no extra pass."""
    enc = problem.enc
    index = {pid: j for j, pid in enumerate(enc.project_ids)}
    rows = [
        int(r)
        for u in out.unassigned
        if u.reason in STRUCTURAL
        for r in enc.project_rows[index[u.project_id]]
        if r >= 0
    ]
    drop = float(np.maximum(terms[rows], 0.0).sum()) if rows else 0.0
    return float(np.floor(total - drop + 1e-6))


_unassigned = trusted_builder(Unassigned)


def _stopped_in_build(snapshot: MarketSnapshot, params: RunParams, t_start: float) -> MatchResult:
    """A run cancelled while building its model: nothing placed, every project listed as not
    explained, and a bound that needs no model: a row's value is at most its share x
    priority weight x priority x (1 + fit weight) (site quality and market fit are at most
    FIT_QUALITY + FIT_MARKET = 1, cost only lowers it) plus its stability bonus, and a
    project has at most two rows with shares at most 1."""
    w = params.weights
    bound = sum(
        2.0 * (w.priority * p.priority * (1.0 + w.fit) + w.stability) for p in snapshot.projects
    )
    bound = float(np.ceil(bound))
    # Built without validation (100,000 projects: about a second of pydantic at load), every
    # field is of the right type by construction.
    return MatchResult.model_construct(
        snapshot_version=snapshot.version,
        status=SolveStatus.FEASIBLE,
        objective=0.0,
        bound=bound,
        gap=bound / max(1.0, bound),
        assignments=[],
        unassigned=[
            _unassigned(
                {
                    "project_id": p.id,
                    "reason": BlockReason.NOT_EXPLAINED,
                    "detail": "the run stopped first",
                    "shortfalls": [],
                }
            )
            for p in snapshot.projects
        ],
        timings={"total": time.perf_counter() - t_start},
        notes=["cancelled while building the model: nothing placed"],
        partial=True,
    )


def _drop_later(*objects: object) -> None:
    """Hand the last references to ``objects`` (a run's models and their arrays, GiBs at
    100000 x 10000) to a thread that drops them: freeing them as ``match`` returned took
    0.1-0.4 s there at load 5-6, after the answer was ready (a cancel's return included)."""
    held = list(objects)
    threading.Thread(target=held.clear, name="match-free", daemon=True).start()


_gc_lock = threading.Lock()
_gc_runs = [0, False]  # runs in progress, whether the collector was on before the first


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while any run is in progress (restored after the
    last). A run makes ~100,000 result objects beside a snapshot of millions, and the full
    collections they set off walk them all: one took 7.8 s at 100000 x 10000 under load,
    which no cancel could interrupt (arrays and results hold no cycles worth collecting)."""
    with _gc_lock:
        if _gc_runs[0] == 0:
            _gc_runs[1] = gc.isenabled()
            gc.disable()
        _gc_runs[0] += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_runs[0] -= 1
            if _gc_runs[0] == 0 and _gc_runs[1]:
                gc.enable()


def match(
    snapshot: MarketSnapshot,
    params: RunParams,
    control: RunControl | None = None,
    *,
    map_parts: MapParts | None = None,
    site_table: SiteTable | None = None,
    solver: SolveParams | None = None,
) -> MatchResult:
    """Assign the snapshot's projects to sites; raises SnapshotError for an unusable snapshot.

    Column generation around the solver: solve on each project's best sites by value; price
    the capacity with the solve's Lagrangian prices and add each project's best sites by
    reduced value (where there is still room); solve again from the previous answer; repeat
    while pricing finds new sites and time allows. The bound is finally taken over every
    eligible pair of the market (``market_bound``), not just over the candidates.

    ``control``: deadline, cancel and progress (default: ``params.time_limit_s`` from now).
    ``map_parts``: fans the independent parts of each solve out (see matcher/solver.py).
    ``site_table``: the snapshot's encoded sites, e.g. cached per market version.
    ``solver``: tuned solver knobs (``SolveParams``) other than the run's own.
    """
    with _collector_paused():
        return _match(snapshot, params, control, map_parts, site_table, solver)


def _complete_lists(snapshot: MarketSnapshot, params: RunParams, sp: SolveParams) -> RunParams:
    """``params`` with candidate lists holding every eligible site on a small market
    (``candidates_per_project`` is then a floor): no eligible pair is left outside the model,
    whose bound no longer needs the unpriced ``outside_best`` of each row (on a 2000 x 200
    market, 16 sites a row left the model's Lagrangian at 12.97 M against 12.89 M with
    complete lists), and the split bound can tighten it."""
    n_sites = len(snapshot.sites)
    small = n_sites * len(snapshot.projects) <= sp.complete_lists_max_pairs
    if not small or n_sites > sp.complete_lists_max_sites:
        return params
    k = max(params.candidates_per_project, n_sites)
    return params.model_copy(update={"candidates_per_project": k})


def _match(
    snapshot: MarketSnapshot,
    params: RunParams,
    control: RunControl | None,
    map_parts: MapParts | None,
    site_table: SiteTable | None,
    solver: SolveParams | None,
) -> MatchResult:
    sp = solve_params(params, solver)
    if control is None:
        control = RunControl(params.time_limit_s, deterministic=params.deterministic)
    limit = control.time_limit_s
    t_start = time.perf_counter()
    try:
        problem = build_problem(
            snapshot, _complete_lists(snapshot, params, sp), control=control, site_table=site_table
        )
    except Stopped as stopped:
        # Its traceback holds the build's frames (the encoding, the kernels' buffers): they
        # are dropped by a thread of their own too, not as this block ends (0.2-0.3 s at
        # 100000 x 10000, load 7).
        _drop_later(stopped.__traceback__)
        stopped.__traceback__ = None
        out = _stopped_in_build(snapshot, params, t_start)
        control.report("done", objective=0.0, bound=out.bound, placed=0)
        return out
    kernel_s = problem.timings["kernels"]
    # A round of pricing costs a kernel pass with prices and a model rebuild.
    price_estimate = (
        sp.price_kernel_passes * kernel_s + sp.price_model_passes * problem.timings["model"]
    )
    bound_estimate = sp.market_bound_kernel_passes * kernel_s
    # Time kept for the market bound: its first pass, and its subgradient steps (one pass
    # each) once the first solve shows they are needed.
    bound_keep = min(bound_estimate, sp.reserve_share * limit)
    market_steps = False
    best_problem, best = problem, _nothing_placed(problem)
    bound = best.bound
    solve_s = price_s = 0.0
    added_total = 0
    rounds = 0
    split_stats: dict[str, float] = {}  # the split bound's, when it runs
    last = len(sp.round_shares)  # index of the final solve, which takes what is left
    step = 0
    # The first round always runs (unless cancelled): even out of time, its greedy gives a
    # feasible answer in a fraction of what building took.
    while not control.cancelled and (rounds == 0 or not control.stop_requested()):
        unplaced = int(np.count_nonzero(best.choice == NONE))
        keep = _after_solve_s(problem, sp, unplaced) + bound_keep
        if params.deterministic:  # fixed shares of the limit, whatever the clock says
            fraction = sp.round_shares[step] if step < last else 1.0 - sum(sp.round_shares[:rounds])
            round_control = control.slice(limit * fraction)
        else:
            window = control.left() - keep
            share = sp.round_shares[step] if step < last else 1.0
            if window * share < sp.min_round_s and rounds:
                break
            round_control = control.slice(max(sp.min_round_s, window * share))
        t0 = time.perf_counter()
        solution = solve(
            problem.model,
            replace(sp, time_limit_s=round_control.time_limit_s),
            round_control,
            map_parts=map_parts,
        )
        solve_s += time.perf_counter() - t0
        rounds += 1
        bound = min(bound, solution.bound)  # every round's bound holds for the whole market
        # The best answer and the problem it belongs to (pricing changes the candidates).
        if solution.objective >= best.objective and solution.status != SolveStatus.UNKNOWN:
            best_problem, best = problem, solution
        placed = int(np.count_nonzero(best.choice[problem.enc.project_rows[:, 0]] != NONE))
        control.report("solve", objective=float(best.objective), bound=float(bound), placed=placed)
        if rounds == 1:
            # Time kept for the market steps (a share of the limit: they go on tightening the
            # bound while later solves and rounds of pricing barely move the answer); a larger
            # share when the model's prices barely bound the market.
            weak = bound > (1 - sp.market_steps_below_gain) * item_upper_bound(problem)
            share = sp.market_steps_share if weak else sp.market_steps_priced_share
            market_steps = share > 0
            bound_keep = max(bound_keep, share * limit)
        if (
            rounds == 1
            and problem.model.n_cand <= sp.lp_max_candidates
            and (best.objective < bound and not control.stop_requested())
        ):
            # A small model: the LP relaxation with the second-source links is cheap and
            # tighter than the Lagrangian; it holds for the whole market (outside options).
            t0 = time.perf_counter()
            control.report("lp_bound")
            # Deterministic: no clock, the LP is solved to the end (small models only).
            lp_limit = (
                sp.lp_deterministic_s
                if params.deterministic
                else min(sp.lp_share * limit, max(0.1, control.left()))
            )
            lp = lp_bound(problem.model, lp_limit)
            if lp is not None:
                bound = min(bound, lp)
                problem.stats["lp_bound"] = float(lp)
            problem.timings["lp_bound"] = time.perf_counter() - t0
        states = None
        if (
            rounds == 1
            and not params.deterministic
            and best.objective < bound
            and not control.stop_requested()
            and problem.model.n_cand <= sp.split_max_candidates
        ):
            states = fit_states(
                problem.model, solution.prices, sp.split_states, sp.split_min_states,
                sp.split_max_work,
            )  # fmt: skip
        if states is not None:
            # A small model: its congested resources split into knapsacks give a tighter
            # bound than the capacity prices (matcher.split_bound), valid for the market too.
            t0 = time.perf_counter()
            control.report("split_bound")
            split, steps = split_bound(
                problem.model, solution.prices, best.objective, states=states,
                max_steps=sp.split_max_steps, control=control,
                time_limit_s=min(sp.split_share * limit, max(0.0, control.left() - keep)),
            )  # fmt: skip
            bound = min(bound, split)
            split_stats = {"split_bound": float(split), "split_steps": float(steps)}
            split_stats["split_states"] = float(states)
            split_stats["split_s"] = time.perf_counter() - t0
        if step == last or control.stop_requested():
            break
        unplaced = int(np.count_nonzero(best.choice == NONE))
        room = control.left() - _after_solve_s(problem, sp, unplaced) - bound_keep
        if not params.deterministic and room < sp.price_margin * price_estimate:
            # No time for another round of pricing: finish from this answer with what is left.
            start = best.choice if best_problem is problem else solution.choice
            problem = replace(problem, model=replace(problem.model, hint=start))
            step = last
            continue
        t0 = time.perf_counter()
        try:
            extended, added = extend_problem(problem, solution.prices, control)
        except Stopped:
            break  # cancelled while pricing: the best answer so far stands
        price_estimate = time.perf_counter() - t0
        price_s += price_estimate
        added_total += added
        control.report("price")
        warm = _warm_start(problem, extended, solution.choice)
        problem = replace(extended, model=replace(extended.model, hint=warm))
        del extended  # ``problem`` is the only holder of the new model (see _drop_later)
        # Nothing new to price in: go straight to the final solve with the time left.
        step = step + 1 if added else last
    if best.status == SolveStatus.UNKNOWN:
        best = replace(best, status=SolveStatus.FEASIBLE)
    problem, solution = best_problem, replace(best, bound=bound)
    solved, solved_prices = problem, solution.prices  # the model the prices belong to
    priced = rounds and len(solved_prices) == solved.model.n_res
    # Each row's term of the Lagrangian bound at the final prices, so that projects the
    # explanations prove unplaceable in the whole market can be taken off it below.
    terms = None
    if (
        priced
        and not control.cancelled
        and (params.deterministic or solved.model.use_res.size <= sp.structural_bound_max_uses)
    ):
        terms = lagrangian_terms(solved.model, solved_prices)
    # The last pass, then the answer verified and explained: the bound over the whole market
    # comes last, with whatever time is left (its steps aim at the final objective).
    t0 = time.perf_counter()
    grace = sp.explain_grace_share * limit + sp.explain_grace_s
    problem, choice, completed = complete(problem, solution.choice, control, grace_s=grace)
    solution = replace(solution, choice=choice)
    complete_s = time.perf_counter() - t0
    problem.timings["price"] = price_s
    problem.timings["complete"] = complete_s
    problem.stats["completed_projects"] = float(completed)
    if control.first_feasible_s is not None:
        problem.stats["first_feasible_s"] = control.first_feasible_s
    problem.stats["priced_candidates"] = float(added_total)
    problem.stats["rounds"] = float(rounds)
    problem.stats.update(split_stats)
    out = result(
        snapshot,
        problem,
        solution,
        solve_s=solve_s,
        t_start=t_start,
        control=control,
        explain_grace_s=grace,
    )
    update: dict = {"notes": list(out.notes)}
    bound = out.bound
    if terms is not None:
        bound = min(bound, _without_structural(problem, out, *terms))
    # The bound over every eligible pair is optional (the solver's bound is already valid for
    # the market): it runs when its first pass fits, with a small share of the limit as slack,
    # and stops (between chunks of rows) at that slack; the solver's bound then stands.
    t0 = time.perf_counter()
    latest = control.deadline + sp.bound_overrun_share * limit
    fits = params.deterministic or latest - control.clock() >= bound_estimate
    if rounds and not control.cancelled and fits:
        control.report("market_bound")

        def past_budget() -> bool:
            return control.cancelled or (not params.deterministic and control.clock() > latest)

        steps = [0]

        def another(step_s: float) -> bool:
            """Whether one more subgradient step fits (deterministic: a fixed number)."""
            if params.deterministic:
                ok = steps[0] < sp.market_bound_steps and not control.cancelled
            else:
                ok = not control.cancelled and control.clock() + step_s < latest
            steps[0] += ok
            return ok

        try:
            whole = market_bound(
                solved, solved_prices, control, stop=past_budget, target=out.objective,
                another=another if market_steps else None, params=sp,
            )  # fmt: skip
            bound = min(bound, whole)
            out.stats["market_bound_steps"] = float(steps[0])
        except Stopped:  # cancelled or out of time: the solver's bound stands
            update["notes"].append(
                "the bound over every eligible pair was stopped (out of time): the bound "
                "reported is the solver's (still valid for the whole market)"
            )
        out.timings["market_bound"] = time.perf_counter() - t0
    elif rounds:
        update["notes"].append(
            "no time left for the bound over every eligible pair: the bound "
            "reported is the solver's (still valid for the whole market)"
        )
    left = control.left()
    if (
        priced
        and not market_steps  # the model's prices say little about the market: steps did more
        and not params.deterministic
        and not control.cancelled
        and left >= sp.bound_polish_min_s
        and out.objective < bound
    ):
        # Time left: go on tightening the Lagrangian bound from the solve's prices.
        t0 = time.perf_counter()
        control.report("bound")
        polished, lam = lagrangian_bound(
            solved.model,
            out.objective,
            iterations=sp.bound_iterations,
            time_limit_s=left - sp.bound_polish_margin_s,
            params=sp,
            control=control,
            start=solved_prices,
            theta=sp.bound_polish_theta,
        )
        if terms is not None:
            polished = min(
                polished, _without_structural(problem, out, *lagrangian_terms(solved.model, lam))
            )
        bound = min(bound, polished)
        out.timings["bound_polish"] = time.perf_counter() - t0
    if out.objective <= bound < out.bound:  # a bound below a verified answer is a defect
        update.update(bound=float(bound), gap=(bound - out.objective) / max(1.0, abs(bound)))
    if control.cancelled:
        update["partial"] = True
    out = out.model_copy(update=update)
    _drop_later(problem, best_problem, solved)
    del problem, best_problem, solved
    control.report(
        "done",
        objective=out.objective,
        bound=out.bound,
        placed=int(out.stats["assigned_projects"]),
    )
    return out
