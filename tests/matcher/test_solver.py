"""The generic solver against brute force on small models, and its guarantees on any model."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matcher.bound import lagrangian_bound
from matcher.heuristic import heuristic_solution, is_complete
from matcher.model import NONE, AssignmentModel, restrict
from matcher.solver import SolverParams, _parts, solve
from matcher.verify import InvalidAssignment, verify_assignment
from schemas.market import SolveStatus

FAST = SolverParams(time_limit_s=5.0, workers=2, seed=0)


def make_model(
    items: list[list[tuple[int, int, list[tuple[int, int]]]]],
    capacity: list[int],
    *,
    must: list[bool] | None = None,
    partner: list[int] | None = None,
    groups: list[int] | None = None,
    fixed: list[int] | None = None,
    outside: list[int] | None = None,
) -> AssignmentModel:
    """items[i] = [(bin, value, [(resource, amount), ...]), ...]."""
    cand_ptr, cand_bin, cand_value, use_ptr, use_res, use_amt = [0], [], [], [0], [], []
    for cands in items:
        for b, v, uses in cands:
            cand_bin.append(b)
            cand_value.append(v)
            for r, a in uses:
                use_res.append(r)
                use_amt.append(a)
            use_ptr.append(len(use_res))
        cand_ptr.append(len(cand_bin))
    n = len(items)
    n_bins = max(cand_bin, default=0) + 1
    model = AssignmentModel(
        capacity=np.array(capacity, dtype=np.int64),
        cand_ptr=np.array(cand_ptr, dtype=np.int64),
        cand_bin=np.array(cand_bin, dtype=np.int32),
        cand_value=np.array(cand_value, dtype=np.int64),
        use_ptr=np.array(use_ptr, dtype=np.int64),
        use_res=np.array(use_res, dtype=np.int32),
        use_amt=np.array(use_amt, dtype=np.int64),
        must_assign=np.array(must or [False] * n, dtype=bool),
        partner=np.array(partner or [NONE] * n, dtype=np.int32),
        bin_group=np.array(groups or list(range(n_bins)), dtype=np.int32),
        fixed=np.array(fixed or [NONE] * n, dtype=np.int64),
        hint=np.full(n, NONE, dtype=np.int64),
        outside_best=None if outside is None else np.array(outside, dtype=np.int64),
    )
    return model


def brute_force(model: AssignmentModel) -> int | None:
    """The best objective over every assignment, or None if none is feasible."""
    options = [
        [NONE, *range(model.cand_ptr[i], model.cand_ptr[i + 1])] for i in range(model.n_items)
    ]
    best = None
    for combo in itertools.product(*options):
        try:
            value = verify_assignment(model, np.array(combo, dtype=np.int64))
        except InvalidAssignment:
            continue
        best = value if best is None else max(best, value)
    return best


@st.composite
def small_models(draw: st.DrawFn) -> AssignmentModel:
    n_items = draw(st.integers(1, 5))
    n_bins = draw(st.integers(1, 4))
    n_res = n_bins * 2  # two resources (say two months) per bin
    items = []
    for _ in range(n_items):
        bins = draw(st.lists(st.integers(0, n_bins - 1), min_size=0, max_size=3, unique=True))
        cands = []
        for b in bins:
            uses = [(2 * b + k, draw(st.integers(0, 6))) for k in range(2)]
            cands.append((b, draw(st.integers(-5, 20)), uses))
        items.append(cands)
    capacity = draw(st.lists(st.integers(0, 10), min_size=n_res, max_size=n_res))
    must = draw(st.lists(st.booleans(), min_size=n_items, max_size=n_items))
    partner = [NONE] * n_items
    if n_items >= 2 and draw(st.booleans()):
        partner[0], partner[1] = 1, 0
        must[0] = must[1] = False
    groups = draw(st.lists(st.integers(0, 2), min_size=n_bins, max_size=n_bins))
    outside = draw(
        st.lists(st.sampled_from([-(10**12), 0, 3, 15]), min_size=n_items, max_size=n_items)
    )
    return make_model(items, capacity, must=must, partner=partner, groups=groups, outside=outside)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_models())
def test_solve_matches_brute_force_and_bound_is_valid(model: AssignmentModel) -> None:
    optimum = brute_force(model)
    solution = solve(model, SolverParams(time_limit_s=5.0, workers=1, seed=0))
    if optimum is None:
        assert solution.status in (SolveStatus.INFEASIBLE, SolveStatus.UNKNOWN)
        return
    assert solution.status == SolveStatus.OPTIMAL
    assert verify_assignment(model, solution.choice) == solution.objective == optimum
    # The bound also covers pairs cut from candidate lists (outside_best), so it can exceed
    # the optimum of the model itself, never fall below it.
    assert solution.bound >= optimum


@settings(max_examples=60, deadline=None)
@given(small_models())
def test_lagrangian_bound_is_an_upper_bound(model: AssignmentModel) -> None:
    optimum = brute_force(model)
    bound, prices = lagrangian_bound(model, None, iterations=200, time_limit_s=None)
    assert np.all(prices >= 0)
    if optimum is not None:
        assert bound >= optimum


@settings(max_examples=60, deadline=None)
@given(small_models())
def test_heuristic_never_breaks_a_constraint(model: AssignmentModel) -> None:
    choice = heuristic_solution(model, model.cand_value.astype(np.float64))
    if is_complete(model, choice):
        verify_assignment(model, choice)
    else:
        # Incomplete only by leaving must-assign items out; everything placed still fits.
        relaxed = make_relaxed(model)
        verify_assignment(relaxed, choice)


def make_relaxed(model: AssignmentModel) -> AssignmentModel:
    from dataclasses import replace

    return replace(model, must_assign=np.zeros(model.n_items, dtype=bool))


def test_capacity_binds_and_slack() -> None:
    # Two items want bin 0 (value 10 and 8, each using 6 of resource 0); bin 1 is worth 1.
    items = [[(0, 10, [(0, 6)]), (1, 1, [(1, 6)])], [(0, 8, [(0, 6)]), (1, 1, [(1, 6)])]]
    tight = make_model(items, [10, 10])
    solution = solve(tight, FAST)
    assert solution.objective == 11  # only one fits in bin 0
    assert solution.status == SolveStatus.OPTIMAL
    roomy = make_model(items, [12, 10])
    assert solve(roomy, FAST).objective == 18


def test_second_source_goes_to_another_group_or_nowhere() -> None:
    # Items 0 and 1 are a linked pair; bins 0 and 1 are in the same group (CDMO).
    items = [[(0, 10, [(0, 1)]), (1, 9, [(1, 1)])], [(0, 5, [(0, 1)]), (1, 5, [(1, 1)])]]
    same_group = make_model(items, [5, 5], partner=[1, 0], groups=[7, 7])
    solution = solve(same_group, FAST)
    assert solution.objective == 0 and np.all(solution.choice == NONE)
    other_group = make_model(items, [5, 5], partner=[1, 0], groups=[7, 8])
    solution = solve(other_group, FAST)
    verify_assignment(other_group, solution.choice)
    assert solution.objective == 15  # item 0 at bin 0 (10) and its second source at bin 1 (5)


def test_pinned_item_keeps_its_candidate_even_when_worse() -> None:
    items = [[(0, 10, [(0, 1)]), (1, 1, [(1, 1)])]]
    model = make_model(items, [5, 5], fixed=[1])
    solution = solve(model, FAST)
    assert solution.choice[0] == 1 and solution.objective == 1


def test_must_assign_without_room_is_infeasible() -> None:
    items = [[(0, 1, [(0, 6)])], [(0, 1, [(0, 6)])]]
    model = make_model(items, [10], must=[True, True])
    assert solve(model, FAST).status == SolveStatus.INFEASIBLE


def test_independent_components_are_split_and_solved_together() -> None:
    items = [[(0, 3, [(0, 1)])], [(0, 4, [(0, 1)])], [(1, 5, [(1, 1)])], [(2, 6, [(2, 1)])]]
    model = make_model(items, [1, 1, 1])
    parts = _parts(model, bundle=1)
    assert sorted(len(p) for p in parts) == [1, 1, 2]
    solution = solve(model, FAST)
    assert solution.objective == 4 + 5 + 6
    assert solution.stats["parts"] >= 1


def test_restrict_keeps_partner_links_and_pins() -> None:
    items = [[(0, 1, [(0, 1)])], [(1, 2, [(1, 1)]), (2, 3, [(2, 1)])], [(0, 4, [(0, 1)])]]
    model = make_model(items, [1, 1, 1], partner=[NONE, 2, 1], fixed=[NONE, 2, NONE])
    sub, index = restrict(model, np.array([1, 2]), model.capacity)
    assert sub.n_items == 2 and list(sub.partner) == [1, 0]
    assert index[sub.fixed[0]] == 2
    with pytest.raises(ValueError, match="partner"):
        restrict(model, np.array([1]), model.capacity)


def random_gap_model(seed: int, agents: int = 8, jobs: int = 60) -> AssignmentModel:
    rng = np.random.default_rng(seed)
    weight = rng.integers(5, 25, size=(agents, jobs))
    cost = rng.integers(10, 50, size=(agents, jobs))
    capacity = (0.8 * weight.sum(axis=1) / agents).astype(np.int64)
    from matcher.gap import GapInstance, to_model

    return to_model(GapInstance("random", cost, weight, capacity), "min")


def test_deterministic_mode_repeats_itself() -> None:
    model = random_gap_model(3)
    params = SolverParams(time_limit_s=2.0, workers=1, seed=7, deterministic=True)
    first, second = solve(model, params), solve(model, params)
    assert np.array_equal(first.choice, second.choice)
    assert first.objective == second.objective
    assert verify_assignment(model, first.choice) == first.objective


def test_large_model_without_whole_cpsat_improves_on_the_heuristic_by_lns() -> None:
    model = random_gap_model(5, agents=10, jobs=200)
    solution = solve(model, SolverParams(time_limit_s=3.0, workers=2, exact_limit=0))
    assert verify_assignment(model, solution.choice) == solution.objective
    assert solution.stats["lns_iterations"] > 0
    assert solution.objective >= solution.stats["heuristic_objective"]
    assert solution.bound >= solution.objective
