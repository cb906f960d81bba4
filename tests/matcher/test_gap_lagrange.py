"""The plain-GAP path: knapsack Lagrangian bound, tabu search, reduced-cost fixing.

Every claim is checked against brute-force enumeration of all assignments of small random
instances (written apart from the code under test).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matcher.control import GapParams, RunControl, SolveParams
from matcher.gap import GapInstance, gap_objective, read_gap_file
from matcher.gap_exact import resolve_jobs
from matcher.gap_lagrange import (
    LagrangeState,
    PriceState,
    _knapsack,
    _knapsack_core,
    lagrangian_step_value,
)
from matcher.gap_search import greedy_start, loads_of, repair
from matcher.gap_solve import _chunked, _dive, _Search, solve_gap_instance, warm_up


@pytest.fixture(scope="module", autouse=True)
def _compiled() -> None:
    """Timed solves below must not pay for Numba's compile (a cold cache took their 2 s), as
    `cdmo gap` and the benchmark warm up before any clock."""
    warm_up()


@st.composite
def instances(draw, max_agents: int = 3, max_jobs: int = 7) -> GapInstance:
    m = draw(st.integers(1, max_agents))
    n = draw(st.integers(1, max_jobs))
    ints = st.integers(0, 30)
    cost = np.array(draw(st.lists(ints, min_size=m * n, max_size=m * n))).reshape(m, n)
    weight = np.array(draw(st.lists(st.integers(1, 9), min_size=m * n, max_size=m * n)))
    weight = weight.reshape(m, n)
    # Capacities between "almost nothing fits" and "everything fits".
    share = draw(st.floats(0.2, 1.2))
    capacity = np.maximum(1, (weight.sum(axis=1) * share / m).astype(np.int64) + 2)
    return GapInstance("random", cost.astype(np.int64), weight.astype(np.int64), capacity)


def brute(instance: GapInstance) -> tuple[int | None, np.ndarray]:
    """Optimum cost (min) and, per pair, the cheapest feasible assignment using it (inf when
    none), by enumerating every assignment."""
    m, n = instance.agents, instance.jobs
    jobs = np.arange(n)
    best: int | None = None
    per_pair = np.full((m, n), np.inf)
    for agents in itertools.product(range(m), repeat=n):
        a = np.array(agents)
        load = np.bincount(a, weights=instance.weight[a, jobs], minlength=m)
        if np.any(load > instance.capacity):
            continue
        cost = int(instance.cost[a, jobs].sum())
        best = cost if best is None else min(best, cost)
        per_pair[a, jobs] = np.minimum(per_pair[a, jobs], cost)
    return best, per_pair


def converged_state(instance: GapInstance, target: float) -> LagrangeState:
    state = LagrangeState.start(instance.cost, instance.weight, instance.capacity, 2.0)
    for _ in range(30):
        state.run(10, target)
    return state


@given(
    st.lists(st.floats(-50, 50, allow_nan=False), min_size=1, max_size=10),
    st.lists(st.integers(1, 12), min_size=10, max_size=10),
    st.integers(0, 30),
)
@settings(max_examples=200, deadline=None)
def test_knapsack_matches_enumeration_at_every_capacity(rc, w, cap) -> None:
    rc = np.array(rc)
    w = np.array(w[: len(rc)], dtype=np.int64)
    f = np.zeros(cap + 1)
    take = np.zeros(len(rc), dtype=np.bool_)
    # Scratch space as a previous call may leave it (all True): stale marks must not leak.
    keep = np.ones((len(rc), cap + 1), dtype=np.bool_)
    value = _knapsack(rc, w, cap, f, take, keep)
    best = np.zeros(cap + 1)
    for mask in itertools.product((0, 1), repeat=len(rc)):
        x = np.array(mask, dtype=bool)
        weight, v = int(w[x].sum()), float(rc[x].sum())
        for c in range(weight, cap + 1):
            best[c] = min(best[c], v)
    assert np.allclose(f, best) and value == pytest.approx(best[cap])
    # The chosen items fit and reach the optimum.
    assert w[take].sum() <= cap and rc[take].sum() == pytest.approx(best[cap])


@given(
    st.lists(st.integers(-40, 10), min_size=1, max_size=40),
    st.lists(st.integers(0, 15), min_size=40, max_size=40),
    st.integers(0, 60),
    st.sampled_from([1.0, 0.25, 0.1]),
)
@settings(max_examples=300, deadline=None)
def test_core_knapsack_reaches_the_full_dp_optimum(rc, w, cap, scale) -> None:
    """The core knapsack (items fixed by the LP bound, a DP over the rest) against the DP over
    every item: the same optimum, and a chosen set that fits and reaches it. Integer costs
    (scaled) make ties at the break ratio common, zero weights included."""
    rc = np.array(rc, dtype=np.float64) * scale
    w = np.array(w[: len(rc)], dtype=np.int64)
    full = _knapsack(
        rc,
        w,
        cap,
        np.zeros(cap + 1),
        np.zeros(len(rc), dtype=np.bool_),
        np.zeros((len(rc), cap + 1), dtype=np.bool_),
    )
    take = np.ones(len(rc), dtype=np.bool_)  # stale marks from a previous call
    # Scratch as a previous call may leave it.
    value = _knapsack_core(
        rc, w, cap, np.full(cap + 1, -7.0), take, np.ones((len(rc), cap + 1), dtype=np.bool_)
    )
    assert value == pytest.approx(full, abs=1e-9)
    assert w[take].sum() <= cap and rc[take].sum() == pytest.approx(full, abs=1e-9)


@given(instances(), st.floats(0.0, 0.3))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_capacity_prices_bound_and_start_the_knapsack_lagrangian(instance, slack) -> None:
    """The capacity-relaxed Lagrangian's value is a lower bound, and the knapsack Lagrangian
    at the job multipliers its prices give is at least that value."""
    optimum, _ = brute(instance)
    target = (optimum if optimum is not None else float(instance.cost.sum())) * (1 + slack) + 1
    prices = PriceState.start(instance.cost, instance.weight, instance.capacity)
    for _ in range(20):
        prices.run(10, target)
    if optimum is not None:
        assert prices.bound <= optimum + 1e-6
    x = np.zeros(instance.cost.shape, dtype=np.bool_)
    value = lagrangian_step_value(
        prices.cost, prices.weight, prices.capacity, prices.multipliers(), x
    )
    assert value >= prices.bound - 1e-6 * max(1.0, abs(prices.bound))


@given(instances(), st.floats(0.0, 0.3))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_knapsack_lagrangian_bound_and_pair_bounds_are_valid(instance, slack) -> None:
    optimum, per_pair = brute(instance)
    target = (optimum if optimum is not None else float(instance.cost.sum())) * (1 + slack) + 1
    state = converged_state(instance, target)
    if optimum is not None:
        assert state.bound <= optimum + 1e-6
    # Every pair's bound is below every feasible assignment that uses the pair.
    pair = state.pair_bounds()
    feasible = np.isfinite(per_pair)
    assert np.all(pair[feasible] <= per_pair[feasible] + 1e-6)


@given(instances(max_agents=4, max_jobs=8), st.integers(0, 5))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_tabu_search_is_feasible_and_never_worse_than_its_start(instance, seed) -> None:
    m, n = instance.agents, instance.jobs
    fits = instance.weight <= instance.capacity[:, None]
    if not fits.any(axis=0).all():
        return
    start = greedy_start(instance.cost, instance.weight, instance.capacity, fits)
    load = loads_of(instance.weight, start, m)
    start_feasible = bool(np.all(load <= instance.capacity))
    search = _Search(instance.cost.astype(np.int64), instance, fits, start, GapParams(), seed)
    if start_feasible:
        search.best_cost[0] = gap_objective(instance, start)
    search.run(300)
    if search.best_cost[0] < np.iinfo(np.int64).max // 4:
        cost = gap_objective(instance, search.best)  # raises if over capacity
        assert cost == search.best_cost[0]
        if start_feasible:
            assert cost <= gap_objective(instance, start)
        assert np.all(fits[search.best, np.arange(n)])
    else:
        assert not start_feasible


@given(instances(max_agents=6, max_jobs=30), st.integers(0, 5))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_tabu_bounds_skip_only_moves_that_would_not_be_chosen(instance, seed) -> None:
    """The lower bounds that skip chains and swaps change nothing: the same walk, move for
    move (same answer, same penalties, same place), with and without them."""
    fits = instance.weight <= instance.capacity[:, None]
    if not fits.any(axis=0).all():
        return
    start = greedy_start(instance.cost, instance.weight, instance.capacity, fits)
    walks = []
    for prune in (True, False):
        search = _Search(
            instance.cost.astype(np.int64), instance, fits, start, GapParams(), seed, prune
        )
        search.run(400)
        walks.append(search)
    pruned, full = walks
    assert pruned.it == full.it
    assert pruned.best_cost[0] == full.best_cost[0]
    assert np.array_equal(pruned.best, full.best)
    assert np.array_equal(pruned.assign, full.assign)
    assert np.array_equal(pruned.pen, full.pen)


def test_tabu_bounds_change_nothing_on_a_type_c_instance() -> None:
    instance = _yagiura("c10200")
    c = instance.cost.astype(np.int64)
    fits = instance.weight <= instance.capacity[:, None]
    start = greedy_start(c, instance.weight, instance.capacity, fits)
    walks = [_Search(c, instance, fits, start, GapParams(), 3, prune) for prune in (True, False)]
    for walk in walks:
        walk.run(1500)
    assert walks[0].best_cost[0] == walks[1].best_cost[0] < np.iinfo(np.int64).max // 4
    assert np.array_equal(walks[0].best, walks[1].best)
    assert np.array_equal(walks[0].assign, walks[1].assign)


@given(instances(max_agents=3, max_jobs=6), st.integers(0, 2**16))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_exact_resolve_of_some_jobs_is_optimal_for_them_and_keeps_the_rest(instance, seed) -> None:
    """All jobs free: the enumerated optimum. Some jobs free: the others stay, the answer
    fits, is never worse than the start, and is the best placement of the free jobs."""
    optimum, _ = brute(instance)
    if optimum is None:
        return
    m, n = instance.agents, instance.jobs
    fits = instance.weight <= instance.capacity[:, None]
    rng = np.random.default_rng(seed)
    # A feasible start: the brute force's optimum is not used, a walk finds one.
    start = None
    for agents in itertools.product(range(m), repeat=n):
        a = np.array(agents)
        load = np.bincount(a, weights=instance.weight[a, np.arange(n)], minlength=m)
        if np.all(load <= instance.capacity):
            start = a
            if rng.random() < 0.3:
                break
    assert start is not None
    every = resolve_jobs(
        instance.cost, instance.weight, instance.capacity, fits, start, np.arange(n), 5.0, 0
    )
    assert every is not None and gap_objective(instance, every) == optimum
    free = np.flatnonzero(rng.random(n) < 0.5)
    some = resolve_jobs(
        instance.cost, instance.weight, instance.capacity, fits, start, free, 5.0, 0
    )
    assert some is not None
    fixed = np.setdiff1d(np.arange(n), free)
    assert np.array_equal(some[fixed], start[fixed])
    cost = gap_objective(instance, some)  # raises if over capacity
    assert cost <= gap_objective(instance, start)
    # No placement of the free jobs alone does better.
    for agents in itertools.product(range(m), repeat=len(free)):
        a = start.copy()
        a[free] = agents
        load = np.bincount(a, weights=instance.weight[a, np.arange(n)], minlength=m)
        if np.all(load <= instance.capacity):
            assert gap_objective(instance, a) >= cost


@given(instances(max_agents=3, max_jobs=6), st.sampled_from(["min", "max"]))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_gap_path_reaches_the_enumerated_optimum_with_a_valid_bound(instance, sense) -> None:
    flipped = GapInstance("flipped", -instance.cost, instance.weight, instance.capacity)
    optimum, _ = brute(instance if sense == "min" else flipped)
    answer = solve_gap_instance(instance, sense, SolveParams(time_limit_s=2.0, workers=1))
    if optimum is None:
        assert answer.agents is None and answer.status in ("infeasible", "unknown")
        return
    optimum = optimum if sense == "min" else -optimum
    assert answer.agents is not None
    assert gap_objective(instance, answer.agents) == answer.objective == optimum
    if answer.bound is not None:
        if sense == "min":
            assert answer.bound <= optimum + 1e-6
        else:
            assert answer.bound >= optimum - 1e-6


def test_gap_path_deterministic_mode_reproduces_the_answer() -> None:
    rng = np.random.default_rng(3)
    m, n = 5, 40
    weight = rng.integers(5, 25, size=(m, n))
    instance = GapInstance(
        "det",
        rng.integers(10, 50, size=(m, n)),
        weight,
        (weight.sum(axis=1) * 0.8 / m).astype(np.int64),
    )
    params = SolveParams(time_limit_s=2.0, workers=1, deterministic=True)
    a = solve_gap_instance(instance, "min", params)
    b = solve_gap_instance(instance, "min", params)
    assert a.objective is not None and a.objective == b.objective
    assert np.array_equal(a.agents, b.agents)


def test_job_that_fits_nowhere_is_reported_infeasible() -> None:
    instance = GapInstance(
        "nowhere", np.ones((2, 2), dtype=np.int64), np.array([[1, 9], [1, 9]]), np.array([5, 5])
    )
    answer = solve_gap_instance(instance, "min", SolveParams(time_limit_s=1.0, workers=1))
    assert answer.status == "infeasible" and answer.agents is None


def _yagiura(name: str) -> GapInstance:
    default = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "gap"
    path = Path(os.environ.get("GAP_DATA", default)) / "yagiura" / name
    if not path.exists():
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(f"GAP benchmark data missing at {path} (set GAP_DATA)")
        pytest.skip(f"GAP benchmark data not found at {path}; set GAP_DATA to run")
    return read_gap_file(path)[0]


def test_knapsack_bound_is_tight_on_a_hard_type_d_instance() -> None:
    """d10200: best known 12430. Relaxing the capacities gives ~10 % below it; the knapsack
    Lagrangian must come within 0.2 % in a few hundred steps (and never pass it)."""
    instance = _yagiura("d10200")
    state = LagrangeState.start(instance.cost, instance.weight, instance.capacity, 2.0)
    for _ in range(40):
        state.run(10, 12430 * 1.01)
    assert 12430 * 0.998 <= state.bound <= 12430
    relaxed = instance.cost.min(axis=0).sum()
    assert relaxed < 12430 * 0.95


def test_price_start_reaches_the_optimum_bound_on_d801600() -> None:
    """d801600 (80 x 1600, optimum 97034): 100 knapsack steps from the second-cheapest costs
    stayed 0.7 % below; the capacity prices reach its LP bound, which is the optimum, and the
    knapsack Lagrangian started from them is there at its first step (never past it)."""
    instance = _yagiura("d801600")
    prices = PriceState.start(instance.cost, instance.weight, instance.capacity)
    for _ in range(40):
        prices.run(50, 97034 * 1.04)
    assert 97033 < prices.bound <= 97034 + 1e-6
    state = LagrangeState.start(instance.cost, instance.weight, instance.capacity, 0.1)
    state.restart(prices.multipliers(), 0.1)
    state.run(1, 97034 * 1.04)
    assert 97033 < state.bound <= 97034 + 1e-6


def test_gap_path_cancel_returns_soon_with_a_verified_answer() -> None:
    """A cancel from another thread stops every phase (tabu, Lagrangian, CP-SAT) quickly."""
    import threading
    import time

    from matcher.control import RunControl

    rng = np.random.default_rng(5)
    m, n = 10, 150
    weight = rng.integers(5, 25, size=(m, n))
    instance = GapInstance(
        "cancel",
        rng.integers(10, 50, size=(m, n)),
        weight,
        (weight.sum(axis=1) * 0.8 / m).astype(np.int64),
    )
    seen: list = []
    control = RunControl(60.0, on_progress=seen.append)
    timer = threading.Timer(1.5, control.cancel)
    timer.start()
    started = time.perf_counter()
    answer = solve_gap_instance(instance, "min", SolveParams(time_limit_s=60.0, workers=1), control)
    took = time.perf_counter() - started
    timer.cancel()
    assert took < 10.0  # loaded CI machines; the deadline was 60 s
    if answer.agents is not None:
        assert gap_objective(instance, answer.agents) == answer.objective
        assert answer.bound is None or answer.bound <= answer.objective
    # Progress went out in the model's value terms (-cost): objective <= bound.
    with_both = [p for p in seen if p.objective is not None and p.bound is not None]
    assert all(p.objective <= p.bound + 1e-6 for p in with_both)


@given(instances(max_agents=4, max_jobs=9), st.integers(0, 10_000))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_repair_reaches_capacity_or_says_what_is_left(instance, seed) -> None:
    """From any assignment on fitting pairs: 0 returned means within every capacity, moves
    only to allowed pairs, and a feasible start is left as it is."""
    m, n = instance.agents, instance.jobs
    fits = instance.weight <= instance.capacity[:, None]
    if not fits.any(axis=0).all():
        return
    rng = np.random.default_rng(seed)
    start = np.array([rng.choice(np.flatnonzero(fits[:, j])) for j in range(n)], dtype=np.int64)
    assign = start.copy()
    left = repair(instance.cost.astype(np.int64), instance.weight, instance.capacity, fits, assign)
    load = loads_of(instance.weight, assign, m)
    overload = int(np.maximum(load - instance.capacity, 0).sum())
    assert left == overload
    assert np.all(fits[assign, np.arange(n)])
    before = loads_of(instance.weight, start, m)
    if np.all(before <= instance.capacity):
        assert np.array_equal(assign, start)


@given(instances(max_agents=4, max_jobs=8), st.floats(0.0, 0.5), st.integers(0, 100))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_dive_assigns_every_job_to_an_agent(instance, noise, seed) -> None:
    m, n = instance.agents, instance.jobs
    state = converged_state(instance, float(instance.cost.sum()) + 1)
    leaf, complete = _dive(
        instance.cost.astype(np.int64),
        instance.weight,
        instance.capacity,
        state.best_u,
        GapParams(),
        np.random.default_rng(seed),
        noise,
        RunControl(10.0),
    )
    assert complete and leaf.shape == (n,) and np.all((leaf >= 0) & (leaf < m))


def test_chunked_calls_never_pass_their_most() -> None:
    """A phase whose steps get dearer (the Lagrangian's) is called with at most ``most`` units
    at a time, however cheap its first calls were."""
    counts: list[int] = []

    def step(count: int) -> bool:
        counts.append(count)
        return len(counts) < 30

    _chunked(step, RunControl(60.0), 1, most=10)
    assert max(counts) == 10 and counts[:5] == [1, 2, 4, 8, 10]


@pytest.mark.slow
def test_dives_bring_a_hard_type_d_instance_close_in_deterministic_mode() -> None:
    """d10200 (best known 12430), fixed work (deterministic mode, one worker): the Lagrangian
    dives, their repair and polish, then CP-SAT, end within 1 % of the best known (the tabu
    walk and CP-SAT alone were ~0.6 % off at 10 s on a quiet machine) and every answer is
    verified."""
    instance = _yagiura("d10200")
    answer = solve_gap_instance(
        instance, "min", SolveParams(time_limit_s=10.0, workers=1, deterministic=True)
    )
    assert answer.objective is not None
    assert gap_objective(instance, answer.agents) == answer.objective
    assert answer.stats["gap_dives"] >= 1
    assert answer.bound is not None and answer.bound <= 12430 <= answer.objective
    assert answer.objective <= 12430 * 1.01
