"""Split, solve each part, merge: an AssignmentModel in, a Solution (as data) out.

The flow for one model:

1. ``split`` it into independent parts (connected components of the candidate graph; small
   components are bundled so CP-SAT is called a few times, not thousands);
2. ``solve_part`` on each: the Numba greedy plus local search (matcher/heuristic.py) for a
   first feasible answer in well under a second, a Lagrangian bound and resource prices
   (matcher/bound.py), the greedy again on price-reduced values; then improve: a part small
   enough for one CP-SAT model is solved whole while, with two or more workers, large
   neighbourhood search runs beside it; a larger part gets LNS alone (re-solve a
   neighbourhood of bins with CP-SAT, the rest fixed, keep it if better);
3. ``merge`` the parts' answers; the bound is the best of the Lagrangian and CP-SAT bounds,
   summed over parts.

``solve(model, params, control, map_parts=None)`` runs the parts in this process, one after
the other (small ones first, the big one gets what is left). A job engine passes
``map_parts`` (anything with the signature of ``map``, e.g. ``ProcessPoolExecutor.map``) to
fan them out: every part is then a picklable ``PartTask`` with its own time share, and the
same ``solve_part`` runs wherever it lands.

Every phase takes its time from one ``RunControl`` (matcher/control.py): a cancel stops LNS
between sub-solves, the Lagrangian between chunks, and CP-SAT at once (``stop_search``).
Deterministic mode uses one worker, no threads and CP-SAT's deterministic time instead of the
wall clock, so the same input gives the same answer run to run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import numpy as np
from numba import njit

from matcher import cpsat
from matcher.bound import item_bound, lagrangian_bound, reduced_values
from matcher.control import RunControl, SolveParams
from matcher.heuristic import (
    greedy_solution,
    improve_locally,
    is_complete,
    objective_of,
)
from matcher.kernels import NO_VALUE
from matcher.model import NONE, AssignmentModel, restrict, usage_of
from matcher.verify import InvalidAssignment, verify_assignment
from schemas.market import SolveStatus

# The one parameters object lives in matcher/control.py; the old name stays importable.
SolverParams = SolveParams


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
class Part:
    """Items of the model that share no resource with any other part, and their sub-model
    (resource and bin indices stay global, capacity is the whole model's)."""

    items: np.ndarray  # int64, item indices in the whole model
    model: AssignmentModel
    cand_index: np.ndarray  # int64: candidate index in the whole model of each sub-candidate

    @property
    def size(self) -> int:
        return self.model.n_cand


@dataclass
class PartResult:
    """A part's answer (candidate indices of the part's model), bound and prices, as data."""

    choice: np.ndarray | None
    objective: int
    bound: int
    optimal: bool
    infeasible: bool
    prices: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PartTask:
    """One part with the parameters it is solved under (its time share in
    ``params.time_limit_s``): what a job engine sends to a worker."""

    part: Part
    params: SolveParams


def solve_task(task: PartTask) -> PartResult:
    """``solve_part`` of a task, under a run control of its own (for ``map_parts``)."""
    return solve_part(task.part, task.params)


class _Clock:
    """Per-phase wall times and the moment of the first feasible answer."""

    def __init__(self, control: RunControl) -> None:
        self.control = control
        self.marks: dict[str, float] = {}

    def elapsed(self) -> float:
        return self.control.elapsed()

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

    def __init__(self, model: AssignmentModel, params: SolveParams, rng: np.random.Generator):
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
        seed_cand = (
            pool[self.rng.integers(pool.size)]
            if pool is not None
            else (self.rng.integers(m.n_cand))
        )
        seed_bin = int(m.cand_bin[int(seed_cand)])
        # Bins related to the seed: other candidates of the items that could use it.
        related = np.unique(
            m.cand_bin[np.isin(self.cand_item, self.cand_item[m.cand_bin == seed_bin])]
        )
        related = related[related != seed_bin]
        self.rng.shuffle(related)
        in_bins = np.zeros(m.n_bins, dtype=bool)
        free = np.zeros(m.n_items, dtype=bool)
        for b in [seed_bin, *related.tolist()]:
            in_bins[b] = True
            cand_in = in_bins[m.cand_bin]
            free = (placed & in_bins[np.maximum(placed_bin, 0)]) | np.isin(
                np.arange(m.n_items), self.cand_item[cand_in & ~placed[self.cand_item]]
            )
            if int((cand_in & free[self.cand_item]).sum()) >= self.target:
                break
        partners = m.partner[free]
        free[partners[partners != NONE]] = True
        # A pair's other half may sit outside the chosen bins: let it keep its candidate.
        mask = in_bins[m.cand_bin] | (np.arange(m.n_cand) == choice[self.cand_item])
        return np.flatnonzero(free), mask

    def step(
        self,
        choice: np.ndarray,
        *,
        time_limit_s: float | None,
        deterministic_time: float | None,
        seed: int,
        workers: int = 1,
        control: RunControl | None = None,
    ) -> np.ndarray:
        """One LNS move: returns the (possibly) improved choice."""
        m, p = self.model, self.params
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
        solver = cpsat.make_solver(
            time_limit_s=time_limit_s,
            workers=workers,
            seed=seed,
            deterministic_time=deterministic_time,
        )
        # No objective floor: measured to slow the sub-solves down, and the comparison with
        # ``current`` below keeps only improvements anyway.
        run = cpsat.run(sub, solver, hint=hint, control=control)
        self.iterations += 1
        budget = time_limit_s if time_limit_s is not None else deterministic_time
        if run.optimal and budget and run.wall_s < p.lns_fast * budget:
            self.target = int(min(self.target * p.lns_grow, p.lns_max_factor * p.lns_candidates))
        elif not run.optimal:
            self.target = int(max(self.target * p.lns_shrink, p.lns_min_candidates))
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
    return replace(
        model, cand_value=model.cand_value + bonus, must_assign=np.zeros(model.n_items, dtype=bool)
    )


def _run_lns(
    lns: _Lns,
    choice: np.ndarray,
    *,
    control: RunControl,
    det_budget: float,
    stop: threading.Event,
    done: Callable[[np.ndarray], bool] | None = None,
    workers: int = 1,
    on_better: Callable[[np.ndarray], None] | None = None,
) -> np.ndarray:
    """LNS steps until ``control``'s deadline (deterministic: the ``det_budget`` of
    deterministic time), a cancel, a stop signal, or ``done(choice)``. ``workers`` is what
    each sub-solve may use; ``on_better`` hears of each improvement."""
    p = lns.params
    spent = 0.0
    while not stop.is_set() and not control.cancelled and (done is None or not done(choice)):
        before = choice
        if control.deterministic:
            if spent >= det_budget:
                break
            spent += p.lns_deterministic_step
            choice = lns.step(
                choice,
                time_limit_s=None,
                deterministic_time=p.lns_deterministic_step,
                seed=p.seed + lns.iterations,
                control=control,
            )
        else:
            left = control.left()
            if left < p.lns_min_left_s:
                break
            choice = lns.step(
                choice,
                time_limit_s=min(p.lns_subsolve_s, left),
                deterministic_time=None,
                seed=p.seed + lns.iterations,
                workers=workers,
                control=control,
            )
        if on_better is not None and choice is not before:
            on_better(choice)
    return choice


def _polish(
    model: AssignmentModel,
    choice: np.ndarray,
    passes: int,
    control: RunControl,
    params: SolveParams,
    greedy_s: float,
) -> np.ndarray:
    """Local search, one pass at a time so that the clock and a cancel are obeyed between
    passes (a pass on a big model takes a second or more): a pass is only started when
    its estimated cost is a small share of the time left."""
    # Estimated from the greedy's time on the same model in this run (follows the load).
    pass_s = params.local_search_greedy_passes * greedy_s
    for _ in range(passes):
        if control.stop_requested():
            break
        if not control.deterministic and pass_s > params.local_search_share * control.left():
            break
        better = improve_locally(model, choice, 1, control.flag)
        if np.array_equal(better, choice):
            break
        choice = better
    return choice


def solve_part(
    part: Part | AssignmentModel,
    params: SolveParams,
    control: RunControl | None = None,
    *,
    offset: int = 0,
) -> PartResult:
    """Best answer to one part within ``control`` (default: ``params.time_limit_s`` from
    now), with its bound and resource prices. ``offset`` (the value of everything outside
    the part) is added to the objectives reported as progress."""
    model = part.model if isinstance(part, Part) else part
    if control is None:
        control = RunControl(params.time_limit_s, deterministic=params.deterministic)
    deterministic = params.deterministic
    budget_s = control.time_limit_s
    clock = _Clock(control)
    stats: dict[str, float] = {}
    t = time.perf_counter()
    best: np.ndarray | None = None
    best_obj = -(2**62)
    fallback = np.full(model.n_items, NONE, dtype=np.int64)

    def consider_if_feasible(choice: np.ndarray) -> None:
        try:
            verify_assignment(replace(model, must_assign=np.zeros(model.n_items, bool)), choice)
        except InvalidAssignment:
            return
        consider(choice)

    def consider(choice: np.ndarray, phase: str = "heuristics") -> None:
        nonlocal best, best_obj, fallback
        if not is_complete(model, choice):
            if (choice != NONE).sum() > (fallback != NONE).sum():
                fallback = choice
            return
        value = objective_of(model, choice)
        if value > best_obj:
            best, best_obj = choice, value
            stats.setdefault("first_feasible_s", clock.elapsed())
            control.report(phase, objective=float(offset + value))

    if np.any(model.hint != NONE):
        consider_if_feasible(model.hint)  # a warm start, e.g. the previous solve's answer
    # Big models get few local search passes, huge ones (a warm start is there by then) none.
    passes = (
        0
        if model.n_cand > params.local_search_max_candidates
        else max(
            1, min(params.local_search_passes, params.local_search_work // max(1, model.n_cand))
        )
    )
    if control.cancelled:  # e.g. while the parts were split: nothing found, nothing to say
        return PartResult(None, 0, item_bound(model), False, False, np.zeros(model.n_res))
    t_greedy = time.perf_counter()
    greedy_choice = greedy_solution(model, model.cand_value.astype(np.float64), control.flag)
    greedy_s = time.perf_counter() - t_greedy
    consider(greedy_choice)
    if passes:
        consider(_polish(model, greedy_choice, passes, control, params, greedy_s))
    clock.add("heuristic_s", time.perf_counter() - t)

    if control.stop_requested() and best is not None:
        # Out of time (or cancelled) already: the greedy's answer with the per-item bound.
        return PartResult(
            best,
            best_obj,
            item_bound(model),
            False,
            False,
            np.zeros(model.n_res),
            timings=clock.marks,
            stats=stats,
        )
    t = time.perf_counter()
    bound, prices = lagrangian_bound(
        model,
        best_obj if best is not None else None,
        iterations=params.bound_iterations,
        time_limit_s=None
        if deterministic
        else min(max(params.bound_min_s, params.bound_share * budget_s), control.left()),
        params=params,
        control=control,
    )
    clock.add("bound_s", time.perf_counter() - t)
    control.report("bound")

    if not control.stop_requested():
        t = time.perf_counter()
        desirability = reduced_values(model, prices)  # a NumPy pass over every use: checked
        if not control.stop_requested():
            reduced = greedy_solution(model, desirability, control.flag)
            consider(reduced)
            if passes:
                consider(_polish(model, reduced, passes, control, params, greedy_s))
        clock.add("heuristic_s", time.perf_counter() - t)
    stop = threading.Event()
    rng = np.random.default_rng(params.seed)

    def finish(choice, objective, bound_, optimal, infeasible) -> PartResult:
        return PartResult(
            choice, objective, bound_, optimal, infeasible, prices, timings=clock.marks, stats=stats
        )

    if best is not None and best_obj >= bound:
        stats["heuristic_objective"] = best_obj
        return finish(best, best_obj, bound, True, False)

    t = time.perf_counter()
    whole = model.n_cand <= params.exact_limit
    full_run: cpsat.CpsatRun | None = None
    holder: list[cpsat.CpsatRun] = []
    thread = None
    full_solver = None
    if whole and not deterministic and not control.stop_requested():
        # The whole model on every worker, started now, with LNS beside it: CP-SAT proves
        # bounds and wins on small models, LNS keeps improving where the whole model stalls.
        full_solver = cpsat.make_solver(
            time_limit_s=control.left(), workers=params.workers, seed=params.seed
        )
        hint = best if params.hint_whole else None

        def run_full() -> None:
            holder.append(
                cpsat.run(model, full_solver, hint=hint, control=control, report_offset=offset)
            )
            stop.set()

        thread = threading.Thread(target=run_full, name="cpsat-whole", daemon=True)
        thread.start()

    if best is None and model.n_items > 1:
        # Tight model: the greedy left must-assign items out. LNS on the placement-first
        # model moves items around until everything fits.
        t_repair = time.perf_counter()
        relaxed = _placement_first(model)
        repair = _Lns(relaxed, params, rng)
        consider(
            _run_lns(
                repair,
                fallback,
                control=control,
                det_budget=params.repair_share * budget_s,
                stop=stop,
                done=lambda ch: is_complete(model, ch),
            ),
            "lns",
        )
        clock.add("repair_s", time.perf_counter() - t_repair)
        stats["repair_lns_iterations"] = repair.iterations
    if best is not None:
        stats["heuristic_objective"] = best_obj

    def report_lns(choice: np.ndarray) -> None:
        control.report("lns", objective=float(offset + objective_of(model, choice)))

    lns = _Lns(model, params, rng)
    if deterministic:
        # Sequential and clock-free: LNS for its share of the budget, then the whole model.
        if best is not None and model.n_items > 1:
            best = _run_lns(
                lns,
                best,
                control=control,
                det_budget=params.lns_share * budget_s,
                stop=stop,
                on_better=report_lns,
            )
            best_obj = objective_of(model, best)
        if whole and not control.cancelled:
            solver = cpsat.make_solver(
                time_limit_s=None,
                workers=1,
                seed=params.seed,
                deterministic_time=(1 - params.lns_share) * budget_s,
            )
            full_run = cpsat.run(
                model, solver, hint=best if params.hint_whole else None, control=control
            )
    else:
        if (
            best is not None
            and model.n_items > 1
            and (not whole or (params.workers >= 2 and params.lns_beside_whole))
        ):
            # Alone (no whole model beside it), each sub-solve gets every worker.
            best = _run_lns(
                lns,
                best,
                control=control,
                det_budget=0.0,
                stop=stop,
                done=lambda ch: objective_of(model, ch) >= bound,
                workers=1 if whole else params.workers,
                on_better=report_lns,
            )
            best_obj = objective_of(model, best)
        if thread is not None and full_solver is not None:
            if best is not None and best_obj >= bound:
                full_solver.stop_search()
            thread.join()
            full_run = holder[0] if holder else None
    clock.add("improve_s", time.perf_counter() - t)
    stats["lns_iterations"] = lns.iterations
    stats["lns_improvements"] = lns.improvements

    optimal = False
    infeasible = False
    if full_run is not None:
        # CP-SAT bounds the model alone: an item with an outside option (an eligible pair cut
        # from its list, ``outside_best``) could do better in the market than in the model,
        # so its bound only stands for models whose lists are complete.
        if full_run.bound is not None and not np.any(model.outside_best > NO_VALUE):
            bound = min(bound, full_run.bound)
        if (
            full_run.choice is not None
            and full_run.objective is not None
            and (best is None or full_run.objective > best_obj)
        ):
            best, best_obj = full_run.choice, full_run.objective
        infeasible = full_run.infeasible and best is None
        optimal = full_run.optimal and best_obj >= int(full_run.objective or 0)
    if best is not None:
        optimal = optimal or best_obj >= bound
        stats.setdefault("first_feasible_s", clock.elapsed())
    return finish(best, best_obj if best is not None else 0, bound, optimal, infeasible)


# --- the whole model -----------------------------------------------------------------------


def split(model: AssignmentModel, params: SolveParams | None = None) -> list[Part]:
    """The model's independent parts, smallest first. Items without candidates are in none
    (they are never placed), except when one part holds every candidate: it is then the
    model itself, all items included."""
    params = params or SolveParams()
    parts = []
    groups = _parts(model, params.bundle_candidates)
    if (
        len(groups) == 1
        and model.cand_ptr[groups[0] + 1].sum() - model.cand_ptr[groups[0]].sum() == model.n_cand
    ):
        # One part holding every candidate: the model itself (a copy costs ~1 s at 100000 x
        # 10000); its items without candidates are never placed and bound by their term.
        every = np.arange(model.n_items, dtype=np.int64)
        return [Part(every, model, np.arange(model.n_cand, dtype=np.int64))]
    for items in groups:
        sub, cand_index = restrict(model, items, model.capacity)
        parts.append(Part(items, sub, cand_index))
    return sorted(parts, key=lambda p: p.size)


MapParts = Callable[[Callable[[PartTask], PartResult], Iterable[PartTask]], Iterable[PartResult]]


def merge(
    model: AssignmentModel, parts: list[Part], results: list[PartResult], *, cancelled: bool = False
) -> Solution:
    """One Solution of the whole model from its parts' results (any order, same length)."""
    choice = np.full(model.n_items, NONE, dtype=np.int64)
    # Items without any candidate are never placed; a must-assign one makes it infeasible.
    no_candidates = np.diff(model.cand_ptr) == 0
    infeasible = bool(np.any(model.must_assign & no_candidates))
    # Items with no candidates still count in the bound through outside_best (those of a
    # part, in its bound).
    in_part = np.zeros(model.n_items, dtype=np.bool_)
    for part in parts:
        in_part[part.items] = True
    alone = no_candidates & ~model.must_assign & ~in_part
    bound = int(np.maximum(model.outside_best[alone], 0).sum())
    objective = 0
    optimal = True
    found_all = True
    prices = np.zeros(model.n_res)
    timings: dict[str, float] = {}
    stats: dict[str, float] = {"parts": float(len(parts))}
    for part, result in zip(parts, results, strict=True):
        bound += result.bound
        prices += result.prices  # parts share no resource: each prices its own
        optimal &= result.optimal
        infeasible |= result.infeasible
        for key, value in result.timings.items():
            timings[key] = timings.get(key, 0.0) + value
        for key, value in result.stats.items():
            if key == "first_feasible_s":
                stats[key] = max(stats.get(key, 0.0), value)
            else:
                stats[key] = stats.get(key, 0.0) + value
        if result.choice is None:
            found_all = False
            continue
        placed = result.choice != NONE
        choice[part.items[placed]] = part.cand_index[result.choice[placed]]
        objective += result.objective
    if infeasible:
        status = SolveStatus.INFEASIBLE
    elif not found_all:
        status = SolveStatus.UNKNOWN
    elif (optimal or objective >= bound) and not cancelled:
        status = SolveStatus.OPTIMAL
    else:
        status = SolveStatus.FEASIBLE
    stats["items"] = model.n_items
    stats["candidates"] = model.n_cand
    stats["resources"] = model.n_res
    return Solution(
        choice=choice,
        objective=objective if found_all else 0,
        bound=bound,
        status=status,
        prices=prices,
        timings=timings,
        stats=stats,
    )


def _share(
    params: SolveParams, control: RunControl, size: int, remaining: int, total: int
) -> float:
    """A part's time: its share of what is left by candidates (deterministic: of the limit)."""
    if params.deterministic:
        return params.time_limit_s * size / max(1, total)
    return control.left() * size / max(1, remaining)


def solve(
    model: AssignmentModel,
    params: SolveParams,
    control: RunControl | None = None,
    *,
    map_parts: MapParts | None = None,
) -> Solution:
    """Best assignment found within the time limit, with a proven upper bound.

    ``control`` (default: ``params.time_limit_s`` from now) carries the deadline, cancel and
    progress. ``map_parts`` fans the parts out (see the module docstring); by default they
    are solved here, one after the other, each with its share of the time left.
    """
    if control is None:
        control = RunControl(params.time_limit_s, deterministic=params.deterministic)
    t = time.perf_counter()
    parts = split(model, params)
    split_s = time.perf_counter() - t
    total = sum(p.size for p in parts)
    results: list[PartResult] = []
    if map_parts is None:
        remaining = total
        done_objective = 0
        for part in parts:  # quick small parts first; the big one gets the rest
            share = _share(params, control, part.size, remaining, total)
            remaining -= part.size
            result = solve_part(part, params, control.slice(share), offset=done_objective)
            done_objective += result.objective if result.choice is not None else 0
            results.append(result)
    else:
        # Shares fixed up front: the parts may run one after the other on one worker.
        tasks = [
            PartTask(
                part,
                replace(
                    params,
                    time_limit_s=max(
                        params.min_round_s, _share(params, control, part.size, total, total)
                    ),
                ),
            )
            for part in parts
        ]
        results = list(map_parts(solve_task, tasks))
    solution = merge(model, parts, results, cancelled=control.cancelled)
    solution.timings["split_s"] = split_s
    solution.timings["total_s"] = control.elapsed()
    return solution
