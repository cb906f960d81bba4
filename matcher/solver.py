"""Build, hint, solve, LNS and bound for an AssignmentModel. Returns a Solution as data.

The flow for one model:

1. split it into independent parts (connected components of the candidate graph; small
   components are bundled so CP-SAT is called a few times, not thousands);
2. per part: a Lagrangian bound and resource prices (matcher/bound.py), then the Numba greedy
   on raw and on price-reduced values plus local search (matcher/heuristic.py): a first
   feasible answer in well under a second;
3. improve: a part small enough for one CP-SAT model is solved whole (hinted with the
   incumbent) while, with two or more workers, large neighbourhood search runs beside it on
   another core; a larger part gets LNS alone: re-solve a neighbourhood of bins with CP-SAT
   while everything else is fixed, keep it if it is better;
4. the bound is the best of the Lagrangian and CP-SAT bounds, summed over parts.

Deterministic mode uses one worker, no threads and CP-SAT's deterministic time instead of the
wall clock, so the same input gives the same answer run to run.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace

import numpy as np
from numba import njit

from matcher import cpsat
from matcher.bound import lagrangian_bound, reduced_values
from matcher.heuristic import (
    greedy_solution,
    heuristic_solution,
    improve_locally,
    is_complete,
    objective_of,
)
from matcher.model import NONE, AssignmentModel, restrict, usage_of
from matcher.verify import InvalidAssignment, verify_assignment
from schemas.market import SolveStatus


@dataclass(frozen=True)
class SolverParams:
    """Every solver knob in one place."""

    time_limit_s: float = 30.0
    workers: int = 2
    seed: int = 0
    deterministic: bool = False
    # A part with at most this many candidates is also given to CP-SAT as one model.
    exact_limit: int = 200_000
    # Small components are bundled into CP-SAT models of about this many candidates.
    bundle_candidates: int = 50_000
    # Run LNS beside the whole-model CP-SAT (it shares the cores with it).
    lns_beside_whole: bool = True
    # Hint the whole model with the heuristic answer. Off by default: on tight GAPs a hint
    # pins CP-SAT's search near it (measured worse than no hint at 10 s on d30900).
    hint_whole: bool = False
    lns_candidates: int = 400  # initial neighbourhood size, adapted as LNS runs
    lns_subsolve_s: float = 0.25
    bound_iterations: int = 1000
    local_search_passes: int = 50


@dataclass
class Solution:
    choice: np.ndarray  # int64 [n_items]: chosen candidate index, or NONE
    objective: int
    bound: int
    status: SolveStatus
    # Lagrangian prices of the resources (float64 [n_res]): what a unit of each capacity is
    # worth; used to price new candidates (column generation) and to bound the full market.
    prices: np.ndarray = field(default_factory=lambda: np.zeros(0))
    timings: dict[str, float] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)


@dataclass
class _PartResult:
    choice: np.ndarray | None
    objective: int
    bound: int
    optimal: bool
    infeasible: bool
    prices: np.ndarray


class _Clock:
    def __init__(self, limit_s: float) -> None:
        self.start = time.perf_counter()
        self.deadline = self.start + limit_s
        self.marks: dict[str, float] = {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return max(0.0, self.deadline - time.perf_counter())

    def add(self, phase: str, seconds: float) -> None:
        self.marks[phase] = self.marks.get(phase, 0.0) + seconds


# --- parts -------------------------------------------------------------------------------


@njit(cache=True)
def _find(parent, a):
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


@njit(cache=True)
def _bin_components(cand_ptr, cand_bin, partner, n_bins):
    """Component label of each item: items are connected through shared bins."""
    parent = np.arange(n_bins)
    n = len(cand_ptr) - 1
    for i in range(n):
        lo = cand_ptr[i]
        anchor = -1
        if cand_ptr[i + 1] > lo:
            anchor = cand_bin[lo]
        p = partner[i]
        if p >= 0 and cand_ptr[p + 1] > cand_ptr[p]:
            b = cand_bin[cand_ptr[p]]
            if anchor < 0:
                anchor = b
            else:
                ra, rb = _find(parent, anchor), _find(parent, b)
                if ra != rb:
                    parent[ra] = rb
        for c in range(lo + 1, cand_ptr[i + 1]):
            ra, rb = _find(parent, anchor), _find(parent, cand_bin[c])
            if ra != rb:
                parent[ra] = rb
    label = np.full(n, -1, np.int64)
    for i in range(n):
        if cand_ptr[i + 1] > cand_ptr[i]:
            label[i] = _find(parent, cand_bin[cand_ptr[i]])
    return label


def _parts(model: AssignmentModel, bundle: int) -> list[np.ndarray]:
    """Item sets that share no resource, largest first; small components bundled together."""
    label = _bin_components(model.cand_ptr, model.cand_bin, model.partner, model.n_bins)
    # Half of a pair whose other half has no candidate can never be placed either.
    linked = model.partner != NONE
    label[linked & (label[np.maximum(model.partner, 0)] < 0)] = -1
    has_cands = label >= 0
    if not has_cands.any():
        return []
    order = np.argsort(label[has_cands], kind="stable")
    items = np.flatnonzero(has_cands)[order]
    labels = label[items]
    cuts = np.flatnonzero(np.diff(labels)) + 1
    comps = np.split(items, cuts)
    sizes = [int((model.cand_ptr[c + 1] - model.cand_ptr[c]).sum()) for c in comps]
    parts: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    pending_size = 0
    for comp, size in sorted(zip(comps, sizes, strict=True), key=lambda cs: -cs[1]):
        if size >= bundle:
            parts.append(comp)
            continue
        pending.append(comp)
        pending_size += size
        if pending_size >= bundle:
            parts.append(np.sort(np.concatenate(pending)))
            pending, pending_size = [], 0
    if pending:
        parts.append(np.sort(np.concatenate(pending)))
    return parts


# --- large neighbourhood search ------------------------------------------------------------


class _Lns:
    """Re-solve neighbourhoods of bins with CP-SAT while the rest of the part stays fixed."""

    def __init__(self, model: AssignmentModel, params: SolverParams, rng: np.random.Generator):
        self.model = model
        self.params = params
        self.rng = rng
        self.target = params.lns_candidates
        self.cand_item = model.cand_item()
        self.iterations = 0
        self.improvements = 0

    def _neighbourhood(self, choice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A few related bins, the items in them and the unplaced items that could use them;
        those items may move only among those bins. Returns (items, candidate mask)."""
        m = self.model
        placed = choice != NONE
        placed_bin = np.full(m.n_items, NONE, dtype=np.int64)
        placed_bin[placed] = m.cand_bin[choice[placed]]
        # Half the time start where an unplaced item wants to go: that is where value is left.
        waiting = np.flatnonzero(~placed[self.cand_item] & (m.cand_value > 0))
        pool = waiting if waiting.size and self.rng.random() < 0.5 else None
        seed_cand = pool[self.rng.integers(pool.size)] if pool is not None else (
            self.rng.integers(m.n_cand))
        seed_bin = int(m.cand_bin[int(seed_cand)])
        # Bins related to the seed: other candidates of the items that could use it.
        related = np.unique(m.cand_bin[np.isin(self.cand_item,
                                                self.cand_item[m.cand_bin == seed_bin])])
        related = related[related != seed_bin]
        self.rng.shuffle(related)
        in_bins = np.zeros(m.n_bins, dtype=bool)
        free = np.zeros(m.n_items, dtype=bool)
        for b in [seed_bin, *related.tolist()]:
            in_bins[b] = True
            cand_in = in_bins[m.cand_bin]
            free = (placed & in_bins[np.maximum(placed_bin, 0)]) | np.isin(
                np.arange(m.n_items), self.cand_item[cand_in & ~placed[self.cand_item]])
            if int((cand_in & free[self.cand_item]).sum()) >= self.target:
                break
        partners = m.partner[free]
        free[partners[partners != NONE]] = True
        # A pair's other half may sit outside the chosen bins: let it keep its candidate.
        mask = in_bins[m.cand_bin] | (np.arange(m.n_cand) == choice[self.cand_item])
        return np.flatnonzero(free), mask

    def step(self, choice: np.ndarray, *, time_limit_s: float | None,
             deterministic_time: float | None, seed: int, workers: int = 1) -> np.ndarray:
        """One LNS move: returns the (possibly) improved choice."""
        m = self.model
        items, mask = self._neighbourhood(choice)
        if items.size == 0:
            return choice
        keep = choice.copy()
        keep[items] = NONE
        residual = m.capacity - usage_of(m, keep)
        sub, cand_index = restrict(m, items, residual, mask)
        global_to_local = {int(g): k for k, g in enumerate(cand_index.tolist())}
        hint = np.array(
            [global_to_local[int(c)] if c != NONE else NONE for c in choice[items]],
            dtype=np.int64,
        )
        current = objective_of(sub, hint)
        solver = cpsat.make_solver(time_limit_s=time_limit_s, workers=workers, seed=seed,
                                   deterministic_time=deterministic_time)
        # No objective floor: measured to slow the sub-solves down, and the comparison with
        # ``current`` below keeps only improvements anyway.
        run = cpsat.run(sub, solver, hint=hint)
        self.iterations += 1
        budget = time_limit_s if time_limit_s is not None else deterministic_time
        if run.optimal and budget and run.wall_s < 0.3 * budget:
            self.target = int(min(self.target * 1.25, 10 * self.params.lns_candidates))
        elif not run.optimal:
            self.target = int(max(self.target * 0.8, 50))
        if run.choice is None or run.objective is None or run.objective <= current:
            return choice
        self.improvements += 1
        improved = choice.copy()
        placed = run.choice != NONE
        improved[items] = NONE
        improved[items[placed]] = cand_index[run.choice[placed]]
        return improved


# --- one part ------------------------------------------------------------------------------


def _placement_first(model: AssignmentModel) -> AssignmentModel:
    """The same model where must-assign items may stay out but are worth more than any
    combination of values: maximising it places as many of them as possible first. Used to
    reach a first complete assignment when the greedy leaves some out (tight GAPs)."""
    big = int(np.abs(model.cand_value).sum()) + 1
    bonus = np.where(model.must_assign[model.cand_item()], big, 0)
    return replace(model, cand_value=model.cand_value + bonus,
                   must_assign=np.zeros(model.n_items, dtype=bool))


def _run_lns(lns: _Lns, choice: np.ndarray, *, deadline: float | None, det_budget: float,
             params: SolverParams, stop: threading.Event, done=None,
             workers: int = 1) -> np.ndarray:
    """LNS steps until the deadline (or, deterministic, the deterministic-time budget), a
    stop signal, or ``done(choice)``. ``workers`` is what each sub-solve may use."""
    spent = 0.0
    while not stop.is_set() and (done is None or not done(choice)):
        if deadline is None:
            if spent >= det_budget:
                break
            step_det = 0.1
            spent += step_det
            choice = lns.step(choice, time_limit_s=None, deterministic_time=step_det,
                              seed=params.seed + lns.iterations)
        else:
            left = deadline - time.perf_counter()
            if left < 0.02:
                break
            choice = lns.step(choice, time_limit_s=min(params.lns_subsolve_s, left),
                              deterministic_time=None, seed=params.seed + lns.iterations,
                              workers=workers)
    return choice


def _solve_part(model: AssignmentModel, params: SolverParams, budget_s: float, clock: _Clock,
                stats: dict[str, float]) -> _PartResult:
    deterministic = params.deterministic
    part_start = time.perf_counter()
    deadline = None if deterministic else part_start + budget_s
    t = time.perf_counter()
    best: np.ndarray | None = None
    best_obj = -(2**62)
    fallback = np.full(model.n_items, NONE, dtype=np.int64)

    def consider_if_feasible(choice: np.ndarray) -> None:
        try:
            verify_assignment(replace(model, must_assign=np.zeros(model.n_items, bool)),
                              choice)
        except InvalidAssignment:
            return
        consider(choice)

    def consider(choice: np.ndarray) -> None:
        nonlocal best, best_obj, fallback
        if not is_complete(model, choice):
            if (choice != NONE).sum() > (fallback != NONE).sum():
                fallback = choice
            return
        if objective_of(model, choice) > best_obj:
            best, best_obj = choice, objective_of(model, choice)
            stats.setdefault("first_feasible_s", clock.elapsed())

    if np.any(model.hint != NONE):
        consider_if_feasible(model.hint)  # a warm start, e.g. the previous solve's answer
    # A swap pass costs about a second per 200k candidates (more where bins are crowded):
    # big models get one pass, huge ones (a warm start is there by then) none.
    passes = 0 if model.n_cand > 2_000_000 else max(
        1, min(params.local_search_passes, 500_000 // max(1, model.n_cand)))
    greedy_choice = greedy_solution(model, model.cand_value.astype(np.float64))
    consider(greedy_choice)
    if passes:
        consider(improve_locally(model, greedy_choice, passes))
    clock.add("heuristic_s", time.perf_counter() - t)

    t = time.perf_counter()
    bound, prices = lagrangian_bound(
        model, best_obj if best is not None else None, iterations=params.bound_iterations,
        time_limit_s=None if deterministic else max(0.5, 0.1 * budget_s),
    )
    clock.add("bound_s", time.perf_counter() - t)

    t = time.perf_counter()
    consider(heuristic_solution(model, reduced_values(model, prices), passes))
    clock.add("heuristic_s", time.perf_counter() - t)
    stop = threading.Event()
    rng = np.random.default_rng(params.seed)
    if best is not None and best_obj >= bound:
        stats["heuristic_objective"] = stats.get("heuristic_objective", 0) + best_obj
        return _PartResult(best, best_obj, bound, True, False, prices)

    t = time.perf_counter()
    whole = model.n_cand <= params.exact_limit
    full_run: cpsat.CpsatRun | None = None
    holder: list[cpsat.CpsatRun] = []
    thread = None
    full_solver = None
    if whole and deadline is not None:
        # The whole model on every worker, started now, with LNS beside it: CP-SAT proves
        # bounds and wins on small models, LNS keeps improving where the whole model stalls.
        full_solver = cpsat.make_solver(time_limit_s=deadline - time.perf_counter(),
                                        workers=params.workers, seed=params.seed)
        hint = best if params.hint_whole else None

        def run_full() -> None:
            holder.append(cpsat.run(model, full_solver, hint=hint))
            stop.set()

        thread = threading.Thread(target=run_full, name="cpsat-whole", daemon=True)
        thread.start()

    if best is None and model.n_items > 1:
        # Tight model: the greedy left must-assign items out. LNS on the placement-first
        # model moves items around until everything fits.
        t_repair = time.perf_counter()
        relaxed = _placement_first(model)
        repair = _Lns(relaxed, params, rng)
        consider(_run_lns(repair, fallback, deadline=deadline, det_budget=0.25 * budget_s,
                          params=params, stop=stop,
                          done=lambda ch: is_complete(model, ch)))
        clock.add("repair_s", time.perf_counter() - t_repair)
        stats["repair_lns_iterations"] = (stats.get("repair_lns_iterations", 0)
                                          + repair.iterations)
    if best is not None:
        stats["heuristic_objective"] = stats.get("heuristic_objective", 0) + best_obj

    lns = _Lns(model, params, rng)
    if deterministic:
        # Sequential and clock-free: LNS for half the budget, then the whole model.
        if best is not None and model.n_items > 1:
            best = _run_lns(lns, best, deadline=None, det_budget=budget_s / 2, params=params,
                            stop=stop)
            best_obj = objective_of(model, best)
        if whole:
            solver = cpsat.make_solver(time_limit_s=None, workers=1, seed=params.seed,
                                       deterministic_time=budget_s / 2)
            full_run = cpsat.run(model, solver, hint=best if params.hint_whole else None)
    else:
        assert deadline is not None
        if best is not None and model.n_items > 1 and (
            not whole or (params.workers >= 2 and params.lns_beside_whole)):
            # Alone (no whole model beside it), each sub-solve gets every worker.
            best = _run_lns(lns, best, deadline=deadline, det_budget=0.0, params=params,
                            stop=stop, done=lambda ch: objective_of(model, ch) >= bound,
                            workers=1 if whole else params.workers)
            best_obj = objective_of(model, best)
        if thread is not None and full_solver is not None:
            if best is not None and best_obj >= bound:
                full_solver.stop_search()
            thread.join()
            full_run = holder[0] if holder else None
    clock.add("improve_s", time.perf_counter() - t)
    stats["lns_iterations"] = stats.get("lns_iterations", 0) + lns.iterations
    stats["lns_improvements"] = stats.get("lns_improvements", 0) + lns.improvements

    optimal = False
    infeasible = False
    if full_run is not None:
        if full_run.bound is not None:
            bound = min(bound, full_run.bound)
        if full_run.choice is not None and full_run.objective is not None and (
                best is None or full_run.objective > best_obj):
            best, best_obj = full_run.choice, full_run.objective
        infeasible = full_run.infeasible and best is None
        optimal = full_run.optimal and best_obj >= int(full_run.objective or 0)
    if best is not None:
        optimal = optimal or best_obj >= bound
        stats["first_feasible_s"] = stats.get("first_feasible_s", clock.elapsed())
    return _PartResult(best, best_obj if best is not None else 0, bound, optimal, infeasible,
                       prices)


# --- the whole model -----------------------------------------------------------------------


def solve(model: AssignmentModel, params: SolverParams) -> Solution:
    """Best assignment found within the time limit, with a proven upper bound."""
    clock = _Clock(params.time_limit_s)
    stats: dict[str, float] = {}
    choice = np.full(model.n_items, NONE, dtype=np.int64)

    t = time.perf_counter()
    parts = _parts(model, params.bundle_candidates)
    clock.add("split_s", time.perf_counter() - t)
    stats["parts"] = len(parts)

    # Items without any candidate are never placed; a must-assign one makes it infeasible.
    no_candidates = np.diff(model.cand_ptr) == 0
    infeasible = bool(np.any(model.must_assign & no_candidates))
    # Items with no candidates still count in the bound through outside_best.
    bound = int(np.maximum(model.outside_best[no_candidates & ~model.must_assign], 0).sum())
    objective = 0
    optimal = True
    found_all = True
    prices = np.zeros(model.n_res)
    remaining = sum(int(model.cand_ptr[p + 1].sum() - model.cand_ptr[p].sum()) for p in parts)
    for items in sorted(parts, key=len):  # quick small parts first; the big one gets the rest
        size = int(model.cand_ptr[items + 1].sum() - model.cand_ptr[items].sum())
        share = clock.left() * size / max(1, remaining)
        remaining -= size
        sub, cand_index = restrict(model, items, model.capacity)
        if params.deterministic:
            share = params.time_limit_s * size / max(1, model.n_cand)
        result = _solve_part(sub, params, share, clock, stats)
        bound += result.bound
        prices += result.prices  # parts share no resource: each prices its own
        optimal &= result.optimal
        infeasible |= result.infeasible
        if result.choice is None:
            found_all = False
            continue
        placed = result.choice != NONE
        choice[items[placed]] = cand_index[result.choice[placed]]
        objective += result.objective

    if infeasible:
        status = SolveStatus.INFEASIBLE
    elif not found_all:
        status = SolveStatus.UNKNOWN
    elif optimal or objective >= bound:
        status = SolveStatus.OPTIMAL
    else:
        status = SolveStatus.FEASIBLE
    stats["items"] = model.n_items
    stats["candidates"] = model.n_cand
    stats["resources"] = model.n_res
    timings = dict(clock.marks)
    timings["total_s"] = clock.elapsed()
    return Solution(choice=choice, objective=objective if found_all else 0, bound=bound,
                    status=status, prices=prices, timings=timings, stats=stats)
