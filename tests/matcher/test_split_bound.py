"""The split bound (matcher.split_bound): a knapsack per congested resource. Valid on random
models (brute force), with and without pair rules and with capacities rounded to few DP units;
never looser than the capacity prices it starts from when its DP is exact; tighter than any
capacity price where whole items cannot fill a resource; and used by small market runs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_pair_bound import pair_models
from test_solver import brute_force, make_model, small_models

from matcher.bound import lagrangian_bound
from matcher.model import AssignmentModel
from matcher.split_bound import fit_states, split_bound, split_resources, split_work


def _prices(model: AssignmentModel) -> np.ndarray:
    return lagrangian_bound(model, None, iterations=200, time_limit_s=None)[1]


def test_three_items_of_two_hours_fit_once_in_three_hours():
    # Each item is worth 10 and needs 2 of the 3 hours: one fits. Capacity prices can only
    # charge hours (the LP: 1.5 items, 15); the knapsack counts whole items.
    model = make_model([[(0, 10, [(0, 2)])]] * 3, [3])
    lagrangian, lam = lagrangian_bound(model, None, iterations=300, time_limit_s=None)
    assert brute_force(model) == 10
    assert lagrangian >= 15
    bound, _ = split_bound(model, lam, 10.0, states=64, max_steps=50, time_limit_s=None)
    assert bound == 10


def test_only_priced_resources_that_the_candidates_overfill_are_split():
    # Resource 0 is overfilled (3 x 2 > 3), resource 1 is not (one use of 1 in 5).
    model = make_model(
        [[(0, 10, [(0, 2)])], [(0, 10, [(0, 2)])], [(0, 9, [(0, 2), (1, 1)])]], [3, 5]
    )
    split = split_resources(model, np.array([4.0, 1.0]), states=64)
    assert split.res.tolist() == [0] and split.n_slots == 3
    assert split_resources(model, np.array([0.0, 1.0]), states=64).n_slots == 0  # unpriced
    assert split_work(model, np.array([4.0, 1.0]), states=64) == 3 * (3 + 1)
    # Capacity 3 in DP units of at most 2 states: units of 2 hours, amounts rounded down.
    halved = split_resources(model, np.array([4.0, 1.0]), states=2)
    assert halved.unit.tolist() == [2] and halved.cap.tolist() == [1]
    assert halved.weight.tolist() == [1, 1, 1]
    # The finest units whose step fits the work: 3 uses x (3 + 1) cells in hours, 3 x 2 in
    # units of 2 hours, 3 x 2 still in units of 3 (capacity 1): nothing fits 5 cells.
    lam = np.array([4.0, 1.0])
    assert fit_states(model, lam, most=4, least=1, work=12) == 4
    assert fit_states(model, lam, most=4, least=1, work=6) == 2
    assert fit_states(model, lam, most=4, least=1, work=5) is None


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_models(), st.sampled_from([1, 2, 4, 1000]))
def test_split_bound_is_an_upper_bound(model: AssignmentModel, states: int) -> None:
    optimum = brute_force(model)
    lam = _prices(model)
    start, _ = lagrangian_bound(model, None, iterations=0, time_limit_s=None, start=lam)
    bound, _ = split_bound(
        model, lam, optimum or 0, states=states, max_steps=100, time_limit_s=None
    )
    if optimum is not None:
        assert bound >= optimum
        if states >= 1000:  # exact knapsacks: never looser than the prices it starts from
            assert bound <= start


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pair_models(), st.sampled_from([2, 1000]))
def test_split_bound_with_pair_rules_and_outside_options(model: AssignmentModel, states: int):
    optimum = brute_force(model)
    lam = _prices(model)
    bound, _ = split_bound(
        model, lam, optimum or 0, states=states, max_steps=100, time_limit_s=None
    )
    if optimum is not None:
        assert bound >= optimum


@pytest.mark.slow
def test_a_small_market_run_reports_the_split_bound_and_it_holds():
    from matcher.control import SolveParams
    from matcher.generate import generate_market
    from matcher.market import match
    from matcher.problem import build_problem
    from matcher.solver import solve
    from matcher.verify import verify_assignment
    from schemas.market import RunParams

    snap = generate_market(500, 50, 12, seed=1)  # not solved to optimality in the first round
    res = match(snap, RunParams(time_limit_s=3.0, workers=1, seed=1))
    assert res.stats["split_steps"] >= 1
    assert res.stats["split_bound"] >= res.bound >= res.objective
    # Lists were complete (a small market, candidates_per_project left unset): the model
    # holds every eligible pair, and CP-SAT's answer on it never beats the bound.
    full = build_problem(snap, RunParams(candidates_per_project=256)).model
    best = solve(full, SolveParams(time_limit_s=3.0, workers=1, seed=0))
    assert verify_assignment(full, best.choice) <= res.bound
