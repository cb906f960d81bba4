"""One run control: deadline, cancel from any thread, progress; public parts (split /
solve_part / merge, map_parts). Nothing here is timed tightly: limits are checked loosely."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
from market_factories import check_feasible

from matcher import cpsat
from matcher.bound import item_bound, lagrangian_bound
from matcher.control import Progress, RunControl, SolveParams
from matcher.gap import GapInstance, to_model
from matcher.generate import generate_market
from matcher.heuristic import greedy_solution, improve_locally, objective_of
from matcher.market import match
from matcher.model import NONE, AssignmentModel, usage_of
from matcher.solver import merge, solve, solve_part, split
from matcher.verify import verify_assignment
from schemas.market import RunParams


def gap_model(seed: int, agents: int = 10, jobs: int = 120, tight: float = 0.8) -> AssignmentModel:
    rng = np.random.default_rng(seed)
    weight = rng.integers(5, 25, size=(agents, jobs))
    cost = rng.integers(10, 50, size=(agents, jobs))
    capacity = (tight * weight.sum(axis=1) / agents).astype(np.int64)
    return to_model(GapInstance("random", cost, weight, capacity), "min")


def blocks(*models: AssignmentModel) -> AssignmentModel:
    """Independent models side by side: one model whose parts are exactly these."""
    cand_off = np.cumsum([0] + [m.n_cand for m in models])
    use_off = np.cumsum([0] + [len(m.use_res) for m in models])
    res_off = np.cumsum([0] + [m.n_res for m in models])
    bin_off = np.cumsum([0] + [m.n_bins for m in models])

    def cat(f):
        return np.concatenate([f(k, m) for k, m in enumerate(models)])

    return AssignmentModel(
        capacity=cat(lambda k, m: m.capacity),
        cand_ptr=np.concatenate(
            [[0]] + [m.cand_ptr[1:] + cand_off[k] for k, m in enumerate(models)]
        ),
        cand_bin=cat(lambda k, m: m.cand_bin + bin_off[k]).astype(np.int32),
        cand_value=cat(lambda k, m: m.cand_value),
        use_ptr=np.concatenate([[0]] + [m.use_ptr[1:] + use_off[k] for k, m in enumerate(models)]),
        use_res=cat(lambda k, m: m.use_res + res_off[k]).astype(np.int32),
        use_amt=cat(lambda k, m: m.use_amt),
        must_assign=cat(lambda k, m: m.must_assign),
        partner=cat(lambda k, m: m.partner),
        bin_group=cat(lambda k, m: m.bin_group + bin_off[k]).astype(np.int32),
        fixed=cat(lambda k, m: m.fixed),
        hint=cat(lambda k, m: m.hint),
        outside_best=cat(lambda k, m: m.outside_best),
    )


# --- RunControl --------------------------------------------------------------------------


def test_slices_share_the_cancel_flag_and_never_outlive_their_parent():
    root = RunControl(10.0)
    child = root.slice(100.0)
    assert child.deadline <= root.deadline + 1e-9
    half = root.slice(fraction=0.5)
    assert half.time_limit_s <= 5.0 + 1e-6
    stopped = threading.Event()
    with half.on_cancel(stopped.set):
        child.cancel()  # a cancel from any slice reaches the root and every hook
        assert stopped.wait(5.0)
    assert root.cancelled and half.cancelled
    assert root.left() == 0.0 and root.stop_requested()
    # The flag Numba loops read is the root's, set by a cancel from any slice.
    assert half.flag is root.flag and root.flag[0] == 1


def test_a_set_cancel_flag_cuts_the_greedy_short_with_a_feasible_answer():
    model = gap_model(3, agents=8, jobs=3000, tight=0.9)
    desir = model.cand_value.astype(np.float64)
    whole = greedy_solution(model, desir)
    control = RunControl(10.0)
    control.cancel()
    cut = greedy_solution(model, desir, control.flag)
    placed = int(np.count_nonzero(cut != NONE))
    # Stopped after 1023 of its (re-keying) pops: fewer placed than the whole pass (here
    # none: every item is re-keyed once first), and what is placed fits (verified with
    # every item allowed to stay out).
    assert placed < int(np.count_nonzero(whole != NONE)) > 0
    relaxed = replace(model, must_assign=np.zeros(model.n_items, bool))
    verify_assignment(relaxed, cut)  # raises on any capacity exceeded or bad candidate
    assert np.all(usage_of(model, cut) <= model.capacity)


def test_a_set_cancel_flag_cuts_the_local_search_short_with_a_feasible_answer():
    model = gap_model(5, agents=8, jobs=3000, tight=0.9)
    relaxed = replace(model, must_assign=np.zeros(model.n_items, bool))
    # A poor start (the greedy on random desirabilities) leaves the local search much to do.
    start = greedy_solution(model, np.random.default_rng(0).random(len(model.cand_value)))
    whole = improve_locally(relaxed, start, 1)
    assert objective_of(relaxed, whole) > objective_of(relaxed, start)
    control = RunControl(10.0)
    control.cancel()
    cut = improve_locally(relaxed, start, 1, control.flag)
    # Stopped at its first check (item 0, before any move): the start, untouched and a copy.
    assert np.array_equal(cut, start) and cut is not start
    verify_assignment(relaxed, cut)
    assert np.all(usage_of(model, cut) <= model.capacity)


def test_a_cancelled_lagrangian_returns_the_per_item_bound_without_its_last_pass():
    model = gap_model(4)
    control = RunControl(10.0)
    bound, _ = lagrangian_bound(model, None, iterations=50, time_limit_s=None)
    control.cancel()
    cut, prices = lagrangian_bound(model, None, iterations=50, time_limit_s=None, control=control)
    assert cut == item_bound(model) >= bound  # L(0): valid, and looser than the real steps
    assert len(prices) == model.n_res


def test_progress_keeps_the_best_objective_and_the_lowest_bound():
    seen: list[Progress] = []
    control = RunControl(5.0, on_progress=seen.append)
    control.report("a", objective=10.0, bound=50.0, placed=3)
    control.report("b", objective=8.0, bound=60.0)  # a worse answer, a looser bound
    control.report("c", objective=12.0)
    assert [(p.objective, p.bound) for p in seen] == [(10.0, 50.0), (10.0, 50.0), (12.0, 50.0)]
    assert seen[1].placed == 3 and control.first_feasible_s is not None


def test_deterministic_slices_are_budgets_not_clock_readings():
    root = RunControl(4.0, deterministic=True)
    time.sleep(0.05)
    assert root.slice(1.0).time_limit_s == 1.0
    assert not root.slice(1.0).stop_requested()


# --- CP-SAT stopped through its API ----------------------------------------------------------


def test_cancel_from_another_thread_stops_a_running_cpsat_search():
    model = gap_model(11, agents=20, jobs=300, tight=0.7)  # far from proved in 60 s
    control = RunControl(60.0)
    solver = cpsat.make_solver(time_limit_s=60.0, workers=2, seed=0)
    timer = threading.Timer(1.0, control.cancel)
    timer.start()
    t0 = time.perf_counter()
    run = cpsat.run(model, solver, control=control)
    took = time.perf_counter() - t0
    timer.join()
    assert control.cancelled
    assert took < 15.0  # stopped long before its 60 s limit
    assert not run.optimal


def test_a_cancelled_run_starts_no_cpsat_search():
    control = RunControl(60.0)
    control.cancel()
    run = cpsat.run(
        gap_model(1), cpsat.make_solver(time_limit_s=60, workers=1, seed=0), control=control
    )
    assert run.choice is None and run.wall_s == 0.0


def test_cancel_during_solve_returns_the_best_answer_so_far():
    model = gap_model(12, agents=20, jobs=300, tight=0.7)
    # As in the market, items may stay out: any answer so far is a complete one.
    model = replace(model, must_assign=np.zeros(model.n_items, dtype=bool))
    control = RunControl(60.0)
    threading.Timer(1.5, control.cancel).start()
    t0 = time.perf_counter()
    solution = solve(model, SolveParams(time_limit_s=60.0, workers=2), control)
    assert time.perf_counter() - t0 < 15.0
    assert verify_assignment(model, solution.choice) == solution.objective
    assert solution.bound >= solution.objective


# --- match: cancel, time limit, progress ----------------------------------------------------


def test_cancel_after_the_first_feasible_answer_returns_a_verified_partial_result():
    snap = generate_market(600, 60, 12, seed=4)  # the independent checker is quadratic
    phases: list[str] = []

    def on_progress(p: Progress) -> None:
        phases.append(p.phase)
        if p.objective is not None and p.objective > 0:
            control.cancel()

    control = RunControl(120.0, on_progress=on_progress)
    t0 = time.perf_counter()
    res = match(snap, RunParams(time_limit_s=120.0, seed=1), control)
    took = time.perf_counter() - t0
    assert res.partial and took < 30.0  # far from its 120 s limit
    check_feasible(snap, res)  # independent checker: capacities, eligibility, objective
    assert res.objective > 0 and res.bound >= res.objective
    assert phases[:3] == ["encode", "kernels", "build"] and phases[-1] == "done"


def test_cancel_before_the_run_starts_returns_the_empty_answer_at_once():
    snap = generate_market(500, 60, 12, seed=2)
    control = RunControl(60.0)
    control.cancel()
    res = match(snap, RunParams(time_limit_s=60.0), control)
    assert res.partial and res.assignments == [] and res.objective == 0
    assert res.bound >= 0 and len(res.unassigned) == 500


def test_time_limit_is_kept_loosely_on_a_mid_size_market():
    snap = generate_market(6000, 600, 12, seed=5)
    t0 = time.perf_counter()
    res = match(snap, RunParams(time_limit_s=3.0, seed=0))
    took = time.perf_counter() - t0
    assert took < 3 * 3.0
    assert not res.partial and res.objective > 0
    assert res.objective == pytest.approx(sum(a.value for a in res.assignments))


def test_progress_is_reported_from_every_phase():
    snap = generate_market(800, 80, 12, seed=3)
    seen: list[Progress] = []
    res = match(snap, RunParams(time_limit_s=2.0, seed=0), RunControl(2.0, on_progress=seen.append))
    phases = {p.phase for p in seen}
    assert {
        "encode",
        "kernels",
        "build",
        "heuristics",
        "bound",
        "solve",
        "verify",
        "done",
    } <= phases
    objectives = [p.objective for p in seen if p.objective is not None]
    assert objectives == sorted(objectives)
    assert seen[-1].objective == res.objective and seen[-1].bound == res.bound


# --- public parts -------------------------------------------------------------------------


def test_split_solve_part_merge_is_solve():
    model = blocks(gap_model(1, jobs=40), gap_model(2, jobs=50), gap_model(3, jobs=30))
    params = SolveParams(
        time_limit_s=1.0, workers=1, seed=0, deterministic=True, bundle_candidates=1
    )
    parts = split(model, params)
    assert len(parts) == 3
    results = [solve_part(p, params) for p in parts]
    merged = merge(model, parts, results)
    direct = solve(model, params)
    assert verify_assignment(model, merged.choice) == merged.objective
    assert merged.objective == direct.objective


def test_map_parts_on_a_process_pool_gives_the_in_process_answer():
    model = blocks(gap_model(4, jobs=40), gap_model(5, jobs=60))
    params = SolveParams(
        time_limit_s=1.0, workers=1, seed=3, deterministic=True, bundle_candidates=1
    )
    local = solve(model, params)
    with ProcessPoolExecutor(max_workers=2) as pool:
        remote = solve(model, params, map_parts=pool.map)
    assert np.array_equal(local.choice, remote.choice)
    assert (local.objective, local.bound) == (remote.objective, remote.bound)


def test_match_with_a_process_pool_is_the_same_deterministic_match():
    snap = generate_market(400, 40, 12, seed=6)
    params = RunParams(time_limit_s=1.0, seed=1, deterministic=True)
    local = match(snap, params)
    with ProcessPoolExecutor(max_workers=2) as pool:
        remote = match(snap, params, map_parts=pool.map)
    same = {"timings", "stats"}  # wall times differ, nothing else may
    assert local.model_dump(exclude=same) == remote.model_dump(exclude=same)


def test_lp_bound_and_pair_lagrangian_both_hold():
    # The LP relaxes the pair rules fractionally, the Lagrangian solves each pair exactly
    # (matcher.bound): neither dominates the other, both must hold.
    from matcher.bound import lagrangian_bound, lp_bound
    from matcher.problem import build_problem

    snap = generate_market(300, 30, 12, seed=2)
    model = build_problem(snap, RunParams()).model
    lp = lp_bound(model, 10.0)
    lagrangian, _ = lagrangian_bound(model, None, iterations=2000, time_limit_s=None)
    assert lp is not None
    exact = solve(model, SolveParams(time_limit_s=5.0, workers=2))
    verify_assignment(model, exact.choice)
    # valid bounds on the model (and, with outside options, the market)
    assert exact.objective <= min(lp, lagrangian)


def test_matcher_warm_up_compiles_kernels_and_solver():
    import matcher
    from matcher import kernels

    assert matcher.warm_up() > 0 and kernels.warm_up() > 0
    from matcher import pricing, problem

    # Compiled (or loaded) for the argument types of a real run: no run pays JIT time.
    functions = (
        problem._fill_uses,
        problem._resource_ids,
        pricing._new_sites,
        pricing._merge_lists,
    )
    assert all(len(f.signatures) == 1 for f in functions)
    built = problem.build_problem(
        generate_market(300, 30, 12, seed=1), RunParams(candidates_per_project=3)
    )
    prices = np.random.default_rng(0).random(built.model.n_res) * 20
    assert pricing.extend_problem(built, prices)[1] > 0  # it priced new sites in
    assert all(len(f.signatures) == 1 for f in functions)  # ... with no new compilation
