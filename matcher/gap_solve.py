"""The plain-GAP solve path: tabu search, knapsack Lagrangian, reduced-cost fixing, CP-SAT.

0. A greedy start and a short tabu walk (``gap_search``): a first answer.
1. Subgradient steps on the capacity-relaxed Lagrangian (one price per agent: the LP bound
   in a fraction of a second), then on the knapsack Lagrangian from the job multipliers
   those prices give (``gap_lagrange``): a lower bound close to the LP bound of the
   set-partitioning formulation, and multipliers for the Lagrangian dives.
2. The penalised tabu search (``gap_search``) from a greedy start on the Lagrangian pair
   bounds, over the pairs whose bound is within a small window of the lower bound.
3. Reduced-cost fixing: a pair (agent, job) whose Lagrangian bound cannot beat the best
   answer is dropped.
4. The matcher's solver (CP-SAT portfolio with LNS, ``solver.solve``) on the reduced model,
   hinted with the best answer, for the time left. Every answer better than the best one
   uses only kept pairs, so the reduced model loses nothing, and its bound is a bound of the
   whole instance (the best answer itself is in the reduced model).

Everything is computed in minimisation form (``c = cost`` for min, ``-cost`` for max); every
answer is checked against the capacities and its cost recomputed before it is kept.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field, replace

import numpy as np

from matcher.control import GapParams, RunControl, SolveParams
from matcher.gap import GapInstance, Sense, gap_objective
from matcher.gap_exact import resolve_jobs
from matcher.gap_lagrange import LagrangeState, PriceState, lagrangian_step_value
from matcher.gap_search import greedy_start, nearest_agents, repair, tabu_search
from matcher.model import NONE, AssignmentModel
from matcher.solver import solve

NO_COST = np.iinfo(np.int64).max // 4


@dataclass
class GapAnswer:
    """A verified answer in the instance's own sense (cost; min or max)."""

    status: str  # optimal, feasible, infeasible, unknown
    agents: np.ndarray | None  # agent (0-based) per job
    objective: int | None
    bound: float | None  # proven: <= every answer's cost for min, >= for max
    stats: dict[str, float] = field(default_factory=dict)


class _Search:
    """The tabu walk's state between two Numba calls (clock checks happen in between)."""

    def __init__(
        self,
        c: np.ndarray,
        instance: GapInstance,
        allowed: np.ndarray,
        start: np.ndarray,
        gp: GapParams,
        seed: int,
        prune: bool = True,
    ) -> None:
        m, n = c.shape
        self.c, self.instance, self.allowed = c, instance, allowed
        self.assign = start.astype(np.int64).copy()
        spread = float(np.ptp(c)) or 1.0
        p0 = spread / max(1.0, float(instance.weight.mean()))
        self.pen = np.full(m, p0)
        self.tabu = np.zeros((m, n), dtype=np.int64)
        self.near = nearest_agents(c, allowed, gp.chain_agents)
        self.best = self.assign.copy()
        self.best_cost = np.array([NO_COST], dtype=np.int64)
        self.it = 0
        self.seed = seed
        self.params = np.array(
            [
                gp.penalty_rise,
                gp.penalty_fall,
                max(3, n // gp.tenure_lo_div),
                max(5, n // gp.tenure_hi_div),
                gp.stall_iterations,
                max(2, n // gp.kick_div),
                p0 * gp.penalty_min,
                p0 * gp.penalty_max,
                1.0 if prune else 0.0,
            ],
            dtype=np.float64,
        )

    def run(self, iterations: int) -> None:
        self.it = tabu_search(
            self.c,
            self.instance.weight,
            self.instance.capacity,
            self.allowed,
            self.near,
            self.assign,
            self.pen,
            self.tabu,
            self.it,
            iterations,
            self.seed + self.it,
            self.best,
            self.best_cost,
            self.params,
        )


class _Parts:
    """Tabu walks on small parts of an answer: a few agents that share cheap jobs and the
    jobs they hold now, the rest fixed. A part's walk is a GAP of its own, so its
    iterations cost (jobs of the part) x (its agents) instead of n x m; on 1600 jobs a whole
    walk moved one job per 3 ms. The answer stays feasible: a part's better answer replaces
    its jobs' agents and respects the part's capacities."""

    def __init__(self, c: np.ndarray, instance: GapInstance, allowed: np.ndarray, gp: GapParams):
        m, n = c.shape
        self.c, self.instance, self.allowed, self.gp = c, instance, allowed, gp
        self.size = min(m, gp.part_agents)
        # Affinity of two agents: the jobs that have both among their cheapest allowed.
        near = nearest_agents(c, allowed, gp.part_near)
        self.affinity = np.zeros((m, m))
        for t in range(near.shape[1]):
            for v in range(t + 1, near.shape[1]):
                a, b = near[:, t], near[:, v]
                ok = (a >= 0) & (b >= 0)
                np.add.at(self.affinity, (a[ok], b[ok]), 1.0)
                np.add.at(self.affinity, (b[ok], a[ok]), 1.0)
        self.parts = 0
        self.gains = 0

    def agents(self, rng: np.random.Generator) -> np.ndarray:
        """A random agent and the agents with most affinity to the part so far (noisy)."""
        m = self.c.shape[0]
        chosen = [int(rng.integers(m))]
        score = self.affinity[chosen[0]].copy()
        for _ in range(self.size - 1):
            noisy = score * rng.uniform(0.5, 1.5, m)
            noisy[chosen] = -1.0
            nxt = int(np.argmax(noisy))
            chosen.append(nxt)
            score += self.affinity[nxt]
        return np.array(sorted(chosen), dtype=np.int64)

    def improve(
        self,
        assign: np.ndarray,
        rng: np.random.Generator,
        iterations: int,
        control: RunControl | None = None,
    ) -> int:
        """One part's walk from ``assign`` (updated in place when the part improved), cut
        short when ``control`` stops; returns the cost gained."""
        agents = self.agents(rng)
        jobs = np.flatnonzero(np.isin(assign, agents))
        self.parts += 1
        if len(jobs) < 2:
            return 0
        ix = np.ix_(agents, jobs)
        sub_c = np.ascontiguousarray(self.c[ix])
        part = GapInstance(
            "part",
            sub_c,
            np.ascontiguousarray(self.instance.weight[ix]),
            self.instance.capacity[agents],
        )
        start = np.searchsorted(agents, assign[jobs]).astype(np.int64)
        now = int(sub_c[start, np.arange(len(jobs))].sum())
        search = _Search(sub_c, part, self.allowed[ix], start, self.gp, int(rng.integers(1 << 30)))
        search.best_cost[0] = now
        search.best[:] = start
        while search.it < iterations and (control is None or not control.stop_requested()):
            before = search.it
            search.run(min(self.gp.search_chunk * 16, iterations - search.it))
            if search.it == before:
                break  # no move left in this part (it spun until the phase's end before)
        gain = now - int(search.best_cost[0])
        if gain > 0:
            assign[jobs] = agents[search.best]
            self.gains += 1
        return gain


def _dive(
    c: np.ndarray,
    weight: np.ndarray,
    capacity: np.ndarray,
    u: np.ndarray,
    gp: GapParams,
    rng: np.random.Generator,
    noise: float,
    control: RunControl,
) -> tuple[np.ndarray, bool]:
    """One Lagrangian dive: a column is an agent's knapsack answer (its whole set of jobs) at
    the current multipliers. Repeatedly fix the columns the last subgradient steps agree on
    most (the share of their jobs each column kept over those steps, with ``noise`` times a
    random factor so that dives differ), drop their agents and jobs, and re-run a few steps
    on the rest from the multipliers so far. Returns an agent per job: the jobs left over
    when no agent is (too little room in the fixed columns' agents), or when ``control``
    stops the dive, go where they overload least; the repair and the tabu walk that polish
    every dive remove that. Also returns whether the dive ran to its end (not stopped)."""
    m, n = c.shape
    assign = np.full(n, -1, dtype=np.int64)
    agents, jobs = np.arange(m), np.arange(n)
    u = u.astype(np.float64).copy()
    while len(agents) and len(jobs) and not control.stop_requested():
        ix = np.ix_(agents, jobs)
        state = LagrangeState.start(c[ix], weight[ix], capacity[agents], gp.dive_step_factor)
        state.u[:] = u[jobs]
        state.best_u[:] = u[jobs]
        value = lagrangian_step_value(state.cost, state.weight, state.capacity, state.u, state.x)
        target = value + gp.dive_target_share * abs(value) + 1.0
        agree = state.x.astype(np.float64)
        steps = 1
        for _ in range(gp.dive_steps):
            if state.converged or control.stop_requested():
                break
            state.run(1, target)
            agree += state.x
            steps += 1
        agree /= steps
        x = state.x  # the knapsack answers at the last multipliers
        u[jobs] = state.u
        count = x.sum(axis=1)
        score = np.where(count > 0, (agree * x).sum(axis=1) / np.maximum(count, 1), -1.0)
        score = score * (1.0 + noise * rng.uniform(-1.0, 1.0, len(agents)))
        taken = np.zeros(len(jobs), dtype=bool)
        fixed = []
        least = max(1, int(gp.dive_fix_share * len(agents)))
        for k in np.argsort(-score):
            if score[k] < 0 or (len(fixed) >= least and score[k] < gp.dive_fix_agreement):
                break
            col = x[k] & ~taken
            if fixed and col.sum() < count[k]:
                continue  # overlaps a column fixed at this level
            assign[jobs[col]] = agents[k]
            taken |= col
            fixed.append(k)
        if not fixed:  # no knapsack takes anything: the rest goes to the walk's repair
            break
        agents = np.delete(agents, fixed)
        jobs = jobs[~taken]
    complete = not control.stop_requested()
    if len(jobs):
        load = np.zeros(m, dtype=np.int64)
        done = assign >= 0
        np.add.at(load, assign[done], weight[assign[done], np.flatnonzero(done)])
        for j in jobs:
            i = int(np.argmin(load + weight[:, j] - capacity + 1e-3 * c[:, j]))
            assign[j] = i
            load[i] += weight[i, j]
    return assign, complete


def _chunked(step, control: RunControl, first: int, least: int = 0, most: int = 1 << 20) -> int:
    """Call ``step(count)`` until ``control`` stops it (or ``step`` returns False), with
    ``count`` doubled while a call takes under 20 ms: few clock checks on small instances,
    no long overrun on big ones. Gives up after any call of 20 ms or more when, at its speed,
    the phase could no longer reach ``least`` units of work in its time (its time is better
    left to the next phases; the Lagrangian's knapsacks are small at the start and grow, so
    the speed is judged again at every call, and ``count`` never passes ``most``).
    Returns the units done."""
    count, done = first, 0
    while not control.stop_requested():
        started = time.perf_counter()
        if step(count) is False:
            return done + count
        took = time.perf_counter() - started
        done += count
        if least > 0 and took >= 0.02 and done + control.left() * count / took < least:
            return done
        if took < 0.02 and count < most:
            count = min(2 * count, most)
    return done


def warm_up() -> None:
    """Compile (or load from Numba's cache) every kernel of this path on a tiny instance, so
    no timed solve pays for it."""
    weight = np.array([[2, 3, 4], [3, 2, 2]], dtype=np.int64)
    instance = GapInstance(
        "warm-up", np.array([[3, 1, 2], [1, 4, 2]]), weight, np.array([5, 5], dtype=np.int64)
    )
    c = instance.cost.astype(np.int64)
    fits = weight <= instance.capacity[:, None]
    prices = PriceState.start(c, weight, instance.capacity)
    prices.run(2, 10.0)
    lagrange = LagrangeState.start(c, weight, instance.capacity, 2.0)
    lagrange.restart(prices.multipliers(), 0.1)
    lagrange.run(2, 10.0)
    pair = lagrange.pair_bounds()
    greedy_start(pair, weight, instance.capacity, fits)
    _Search(
        c, instance, fits, greedy_start(c, weight, instance.capacity, fits), GapParams(), 0
    ).run(5)
    # The dives, their repair and the part walks too: left to their first use, they compiled
    # inside the first timed solve (d05100 at a 3 s limit: 11.8 s with an empty cache).
    rng = np.random.default_rng(0)
    leaf, _ = _dive(
        c, weight, instance.capacity, lagrange.best_u, GapParams(), rng, 0.3, RunControl(60.0)
    )
    repair(c, weight, instance.capacity, fits, leaf)
    _Parts(c, instance, fits, GapParams()).improve(np.array([1, 0, 1]), rng, 5)


def _reduced_model(
    c: np.ndarray, instance: GapInstance, keep: np.ndarray, hint_agents: np.ndarray | None
) -> AssignmentModel:
    """Every job with its kept agents as candidates; the value is ``-c`` (maximised)."""
    m, n = c.shape
    keep_t = keep.T  # [n, m], job-major like the model
    counts = keep_t.sum(axis=1)
    cand_ptr = np.zeros(n + 1, dtype=np.int64)
    cand_ptr[1:] = np.cumsum(counts)
    jobs, agents = np.nonzero(keep_t)  # job-major order
    total = len(agents)
    hint = np.full(n, NONE, dtype=np.int64)
    if hint_agents is not None:
        for j in range(n):
            row = agents[cand_ptr[j] : cand_ptr[j + 1]]
            hint[j] = cand_ptr[j] + int(np.searchsorted(row, hint_agents[j]))
    return AssignmentModel(
        capacity=instance.capacity.astype(np.int64),
        cand_ptr=cand_ptr,
        cand_bin=agents.astype(np.int32),
        cand_value=(-c[agents, jobs]).astype(np.int64),
        use_ptr=np.arange(total + 1, dtype=np.int64),
        use_res=agents.astype(np.int32),
        use_amt=instance.weight[agents, jobs].astype(np.int64),
        must_assign=np.ones(n, dtype=bool),
        partner=np.full(n, NONE, dtype=np.int32),
        bin_group=np.arange(m, dtype=np.int32),
        fixed=np.full(n, NONE, dtype=np.int64),
        hint=hint,
    )


def _solve_by(
    model: AssignmentModel, params: SolveParams, control: RunControl, left: float, gp: GapParams
):
    """The market solver on ``model`` for ``left`` seconds, stopped (a cancel of its own
    control) at ``control``'s deadline less ``cpsat_stop_margin_s`` if it runs past it: it
    returns late by the time it takes to build the whole CP-SAT model, which grows with the
    machine's load (3.3 s on e401600 at load 6, before the search's limit was cut to what the
    build left). A cancel of ``control`` reaches it too."""

    def forward(p) -> None:
        control.report(p.phase, objective=p.objective, bound=p.bound, placed=p.placed)

    own = RunControl(control.left() + 60.0, on_progress=forward)
    watchdog = threading.Timer(max(0.0, control.left() - gp.cpsat_stop_margin_s), own.cancel)
    watchdog.daemon = True
    with control.on_cancel(own.cancel):
        watchdog.start()
        try:
            return solve(model, params, own.slice(left))
        finally:
            watchdog.cancel()


def solve_gap_instance(
    instance: GapInstance,
    sense: Sense,
    params: SolveParams,
    control: RunControl | None = None,
    gap_params: GapParams | None = None,
) -> GapAnswer:
    """Best verified answer of one GAP instance within ``control`` (default: the time limit
    of ``params`` from now), with a proven bound."""
    gp = gap_params or GapParams()
    if control is None:
        control = RunControl(params.time_limit_s, deterministic=params.deterministic)
    det = params.deterministic
    c = instance.cost.astype(np.int64) if sense == "min" else -instance.cost.astype(np.int64)
    c = np.ascontiguousarray(c)
    m, n = c.shape
    stats: dict[str, float] = {}
    clock = [time.perf_counter()]

    def timed(phase: str) -> None:
        """Seconds spent in each phase, into the stats (how the shares were used)."""
        now = time.perf_counter()
        stats[f"{phase}_seconds"] = round(now - clock[0], 3)
        clock[0] = now

    fits = instance.weight <= instance.capacity[:, None]
    if not fits.any(axis=0).all():
        return GapAnswer("infeasible", None, None, None, {"reason_job_fits_nowhere": 1.0})

    best_agents: np.ndarray | None = None
    best_cost = NO_COST

    def consider(agents: np.ndarray, phase: str) -> None:
        nonlocal best_agents, best_cost
        cost = gap_objective(instance, agents)  # checks every capacity, recomputes
        value = cost if sense == "min" else -cost
        if value < best_cost:
            best_cost, best_agents = value, np.asarray(agents, dtype=np.int64).copy()
            stats[f"{phase}_found"] = float(cost)
            control.report(phase, objective=-value, placed=n)
        if not any(np.array_equal(agents, e) for _, e in elites):
            elites.append((value, np.asarray(agents, dtype=np.int64).copy()))
            elites.sort(key=lambda e: e[0])
            del elites[gp.elites :]

    # The best distinct answers so far (min-form cost, agents), best first: recombined.
    elites: list[tuple[int, np.ndarray]] = []

    def phase_slice(share: float) -> RunControl:
        """This phase's share of the limit, never eating into the time kept for CP-SAT."""
        total = params.time_limit_s
        return control.slice(min(total * share, control.left() - total * gp.cpsat_reserve_share))

    def run_search(
        search: _Search, share: float, phase: str, least: int = 0, until_feasible: bool = False
    ) -> None:
        if det:
            search.run(gp.search_iterations_deterministic)
        else:

            def step(count: int) -> bool:
                before = search.it
                search.run(count)
                if search.it < before + count:
                    return False  # the walk has no move left
                if until_feasible and search.best_cost[0] < NO_COST:
                    return False
                # Nothing left to find once the answer meets the Lagrangian bound.
                return lower is None or search.best_cost[0] > lower

            _chunked(step, phase_slice(share), gp.search_chunk, least)
        stats[f"{phase}_iterations"] = float(search.it)
        if search.best_cost[0] < NO_COST:
            consider(search.best, phase)

    lower: int | None = None  # the Lagrangian bound, once known

    # 0. A first answer (greedy and a short tabu walk): the Lagrangian steps' target.
    first = _Search(
        c,
        instance,
        fits,
        greedy_start(c, instance.weight, instance.capacity, fits),
        gp,
        params.seed,
    )
    run_search(first, gp.first_search_share, "gap_search")

    timed("first_search")

    # 1. Knapsack Lagrangian, started from the prices of the capacity-relaxed one.
    def target(bound: float) -> float | None:
        """The Polyak target: the best answer's cost (or a guess above the bound); None
        once the bound meets the best answer (nothing left to gain)."""
        if best_cost < NO_COST:
            return None if math.ceil(bound - 1e-6) >= best_cost else float(best_cost)
        if bound < -1e17:
            return float(np.sort(c, axis=0)[min(1, m - 1)].sum())
        return bound + gp.target_share * abs(bound) + 1.0

    prices = PriceState.start(c, instance.weight, instance.capacity)
    lagrange = LagrangeState.start(c, instance.weight, instance.capacity, gp.step_factor)
    price_steps = 0
    steps = 0

    def price_step(count: int) -> bool:
        nonlocal price_steps
        goal = target(prices.bound)
        if goal is None or prices.converged or price_steps >= gp.price_steps:
            return False
        count = min(count, gp.price_steps - price_steps)
        prices.run(count, goal)
        price_steps += count
        return True

    def lagrange_steps(count: int) -> bool:
        """``count`` steps towards the target; False once there is nothing left to gain."""
        nonlocal steps
        goal = target(lagrange.bound)
        if goal is None or lagrange.converged:
            return False
        if det and steps >= gp.lagrange_steps_deterministic:
            return False
        lagrange.run(count, goal)
        steps += count
        return True

    lagrange_phase = phase_slice(gp.lagrange_share) if not det else None
    if det:
        while price_step(gp.price_chunk):
            pass
    else:
        _chunked(price_step, lagrange_phase, gp.price_chunk)
    if abs(prices.bound) < 1e17:
        lagrange.restart(prices.multipliers(), gp.price_step_factor)
    stats["price_steps"] = float(price_steps)
    stats["price_bound"] = prices.bound
    if det:
        while lagrange_steps(gp.lagrange_chunk):
            pass
    else:
        _chunked(lagrange_steps, lagrange_phase, 1, gp.lagrange_least_steps, gp.lagrange_chunk)
    # Unbounded steps (an infeasible instance) leave no usable bound.
    finite = math.isfinite(lagrange.bound) and abs(lagrange.bound) < 1e17
    lower = math.ceil(lagrange.bound - 1e-6) if finite else None
    stats["lagrange_steps"] = float(steps)
    stats["lagrange_bound"] = lagrange.bound
    control.report("gap_lagrange", bound=None if lower is None else -lower)

    def answer(status: str, bound: float | None) -> GapAnswer:
        """The answer in the instance's sense; ``bound`` is in min form. Costs are integers,
        so the bound rounds up to one (never past the answer)."""
        if bound is not None:
            bound = math.ceil(bound - 1e-6)
            if best_agents is not None:
                bound = min(bound, best_cost)
                if bound >= best_cost:
                    status = "optimal"
        if bound is not None and sense == "max":
            bound = -bound
        if best_agents is None:
            return GapAnswer(status, None, None, bound, stats)
        objective = best_cost if sense == "min" else -best_cost
        return GapAnswer(status, best_agents, objective, bound, stats)

    if lower is not None and best_cost < NO_COST and lower >= best_cost:
        return answer("optimal", lower)

    timed("lagrange")

    # 2. A tabu walk seeded from the Lagrangian.
    pair = lagrange.pair_bounds() if lower is not None else np.zeros((m, n))

    def kept(threshold: float) -> np.ndarray:
        keep = fits.copy()
        if lower is not None and threshold < NO_COST:
            eps = 1e-6 * max(1.0, abs(threshold))
            keep &= pair < threshold - 1 + eps
            if best_agents is not None:
                keep[best_agents, np.arange(n)] = True
            # Every job keeps at least its most promising agent.
            keep[np.argmin(np.where(fits, pair, np.inf), axis=0), np.arange(n)] = True
        return keep

    # The walk only visits pairs that may lie in an answer within ``search_window`` of the
    # bound (a heuristic restriction; the exact one, at the best answer's cost, comes next).
    if lower is not None:
        window = lower + gp.search_window * max(1.0, abs(lower))
        keep = kept(min(window, best_cost) if best_cost < NO_COST else window)
    else:
        keep = fits
    stats["kept_pairs_search"] = float(keep.sum())
    if lower is not None and (not control.stop_requested() or det):
        seed_start = greedy_start(pair, instance.weight, instance.capacity, keep)
        search = _Search(c, instance, keep, seed_start, gp, params.seed + 1)
        if best_agents is not None:
            search.best[:] = best_agents
            search.best_cost[0] = best_cost
        run_search(search, gp.search_share, "gap_search", gp.search_least_iterations)

    timed("search")

    def recombine(phase: RunControl, rng: np.random.Generator) -> int:
        """CP-SAT on the jobs where ``cross_elites`` other elite answers, drawn at random,
        differ from the best one (at most ``cross_jobs`` of them, drawn at random), the rest
        as in the best; keeps a better answer. Returns 1 if it ran."""
        if len(elites) < 2 or best_agents is None or (phase.stop_requested() and not det):
            return 0
        base = best_agents
        picks = rng.choice(np.arange(1, len(elites)), min(gp.cross_elites, len(elites) - 1))
        differs = np.zeros(n, dtype=bool)
        for k in picks.tolist():
            differs |= elites[k][1] != base
        free = np.flatnonzero(differs)
        if len(free) == 0:
            return 0
        if len(free) > gp.cross_jobs:
            free = np.sort(rng.choice(free, gp.cross_jobs, replace=False))
        limit = gp.cross_seconds if det else min(gp.cross_seconds, phase.left())
        found = resolve_jobs(
            c, instance.weight, instance.capacity, keep, base, free, limit, params.seed
        )
        if found is not None:
            before = best_cost
            consider(found, "gap_cross")
            stats["gap_cross_improved"] = stats.get("gap_cross_improved", 0.0) + (
                best_cost < before
            )
        stats["gap_cross_jobs"] = stats.get("gap_cross_jobs", 0.0) + len(free)
        return 1

    # 3. Lagrangian dives, each polished by a short tabu walk (the multipliers start from the
    # LP prices, so they are close to the optimum's as soon as there is a bound).
    if lower is not None and (not control.stop_requested() or det):
        rng = np.random.default_rng(params.seed)
        dives = 0
        crosses = 0
        cross_s = 0.0
        dive_start = time.perf_counter()
        phase = phase_slice(gp.dive_share) if not det else control.slice()
        while dives < gp.dives_deterministic or not det:
            if not det and phase.stop_requested():
                break
            noise = 0.0 if dives == 0 else gp.dive_noise
            leaf, complete = _dive(
                c, instance.weight, instance.capacity, lagrange.best_u, gp, rng, noise, phase
            )
            if not complete and not det:
                break  # a dive cut short leaves many jobs over capacity: not worth repairing
            # A leaf is a little over capacity at most agents' ends: the greedy repair makes
            # it feasible at once (the walk alone lost ~0.2 % on d20200 doing it).
            repaired = repair(c, instance.weight, instance.capacity, keep, leaf) == 0
            walk = _Search(c, instance, keep, leaf, gp, params.seed + 7 + dives)
            if repaired:
                walk.best[:] = leaf
                walk.best_cost[0] = int(c[leaf, np.arange(n)].sum())
            if det:
                walk.run(gp.dive_walk_iterations)
            else:

                def polish(count: int, walk: _Search = walk) -> bool:
                    walk.run(count)
                    return walk.it < gp.dive_walk_iterations

                _chunked(polish, phase, gp.search_chunk)
            dives += 1
            if walk.best_cost[0] < NO_COST:
                consider(walk.best, "gap_dive")
                # At most ``cross_share`` of the dives' time: on 100-400 job D instances the
                # dives themselves find the best answers, and fewer of them lost.
                if det or cross_s < gp.cross_share * (time.perf_counter() - dive_start):
                    started = time.perf_counter()
                    crosses += recombine(phase, rng)
                    cross_s += time.perf_counter() - started
            if best_cost <= lower:
                break
        stats["gap_dives"] = float(dives)
        stats["gap_crosses"] = float(crosses)

    timed("dives")

    if best_agents is None and not det:
        # No feasible answer yet (1600 tight jobs where no dive ended: the greedy overloads
        # and the walk needs a few hundred iterations): walk on, CP-SAT's hint needs one.
        run_search(first, gp.first_feasible_share, "gap_search", until_feasible=True)

    # 3b. Tabu walks on small parts of the best answer.
    if best_agents is not None and (not control.stop_requested() or det):
        parts = _Parts(c, instance, keep, gp)
        walk = best_agents.copy()
        rng = np.random.default_rng(params.seed)

        parts_phase = phase_slice(gp.parts_share) if not det else None

        def part_walks(count: int) -> bool:
            for _ in range(count):
                parts.improve(walk, rng, gp.part_iterations, parts_phase)
            consider(walk, "gap_parts")
            return lower is None or best_cost > lower

        if det:
            part_walks(gp.parts_deterministic)
        else:
            _chunked(part_walks, parts_phase, 1)
        stats["gap_parts"] = float(parts.parts)
        stats["gap_parts_improved"] = float(parts.gains)

    timed("parts")

    # 4. Reduced-cost fixing, then CP-SAT on the reduced model, hinted with the best answer.
    keep = kept(best_cost)
    stats["kept_pairs"] = float(keep.sum())
    stats["pairs"] = float(m * n)
    cp_bound: float | None = None
    if not control.stop_requested() or det:
        model = _reduced_model(c, instance, keep, best_agents)
        left = (
            control.left()
            if not det
            else params.time_limit_s
            * (
                1.0
                - gp.first_search_share
                - gp.lagrange_share
                - gp.search_share
                - gp.parts_share
                - gp.dive_share
            )
        )
        left = max(0.01, left)
        if det:
            solution = solve(model, replace(params, time_limit_s=left), None)
        else:
            solution = _solve_by(model, replace(params, time_limit_s=left), control, left, gp)
        if str(solution.status) in ("optimal", "feasible"):
            agents = model.cand_bin[solution.choice].astype(np.int64)
            consider(agents, "cpsat")
        if str(solution.status) == "infeasible" and best_agents is None:
            return GapAnswer("infeasible", None, None, None, stats)
        cp_bound = -float(solution.bound)  # the model maximises -c
        stats["cpsat_status_optimal"] = float(str(solution.status) == "optimal")
    timed("cpsat")
    bounds = [b for b in (lower, cp_bound) if b is not None]
    bound = max(bounds) if bounds else None
    return answer("feasible" if best_agents is not None else "unknown", bound)
