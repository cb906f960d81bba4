"""Cancel reaches the build: the kernel pass checks it between chunks of rows, and a run
cancelled while building returns at once with nothing placed and an honest bound."""

from __future__ import annotations

import time

import numpy as np
import pytest

from matcher import kernels
from matcher.control import Progress, RunControl, SolveParams, Stopped
from matcher.generate import generate_market
from matcher.market import match
from matcher.problem import encode, score
from schemas.market import BlockReason, RunParams


@pytest.fixture(scope="module")
def enc():
    return encode(generate_market(2000, 200, 12, seed=7), RunParams())


@pytest.mark.parametrize("method", ["walk", "lanes"])
def test_chunked_kernel_pass_is_the_one_pass(enc, monkeypatch, method):
    whole = score(enc, RunParams())
    monkeypatch.setattr(kernels, "ROWS_PER_CHECK", 64)  # 2,000+ rows: dozens of chunks
    calls = []
    chunked = kernels.score_pairs(
        enc.sites, enc.rows, enc.words, k=16, w_cost=RunParams().weights.cost,
        fit_market=0.25, stop=lambda: calls.append(1) and False, method=method,
    )  # fmt: skip
    assert len(calls) > 20
    for name in ("cand_ptr", "cand_site", "cand_value", "cand_cost", "counts", "outside_best"):
        assert np.array_equal(getattr(whole, name), getattr(chunked, name)), name


def test_kernel_pass_stops_between_chunks(enc, monkeypatch):
    monkeypatch.setattr(kernels, "ROWS_PER_CHECK", 64)
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Stopped):
        kernels.score_pairs(
            enc.sites, enc.rows, enc.words, k=16, w_cost=0.01, fit_market=0.25, stop=stop
        )
    assert len(calls) == 4  # three chunks scored, stopped before the fourth


@pytest.mark.parametrize("phase", ["encode", "kernels"])
def test_cancel_while_building_returns_at_once_with_an_honest_bound(phase):
    snap = generate_market(3000, 300, 12, seed=8)
    params = RunParams(time_limit_s=60.0, seed=0)

    def on_progress(p: Progress) -> None:
        if p.phase == phase:  # before the kernel pass, or before assembling the model
            control.cancel()

    control = RunControl(60.0, on_progress=on_progress)
    t0 = time.perf_counter()
    res = match(snap, params, control)
    assert time.perf_counter() - t0 < 30.0  # far from its 60 s
    assert res.partial and res.assignments == [] and res.objective == 0
    assert {u.reason for u in res.unassigned} == {BlockReason.NOT_EXPLAINED}
    assert len(res.unassigned) == len(snap.projects)
    done = match(snap, params.model_copy(update={"time_limit_s": 3.0}))
    assert res.bound >= done.bound >= done.objective > 0


def test_market_bound_pass_is_budgeted():
    from matcher.pricing import market_bound
    from matcher.problem import build_problem

    problem = build_problem(generate_market(300, 30, 12, seed=3), RunParams())
    prices = np.zeros(problem.model.n_res)
    assert market_bound(problem, prices, stop=lambda: False) > 0
    with pytest.raises(Stopped):
        market_bound(problem, prices, stop=lambda: True)


def test_encoding_checks_the_stop_request_between_blocks_of_projects():
    snap = generate_market(3000, 50, 12, seed=9)
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) >= 3  # the site loop asks once (50 sites), then every 1024 projects

    with pytest.raises(Stopped):
        encode(snap, RunParams(), stop=stop)
    assert len(calls) == 3
    assert encode(snap, RunParams(), stop=lambda: False).rows.n_rows >= 3000


def test_cancel_during_assembly_is_heard_at_the_next_chunk_of_candidates(monkeypatch):
    from matcher import problem

    snap = generate_market(3000, 300, 12, seed=8)
    params = RunParams(time_limit_s=60.0, seed=0)
    control = RunControl(60.0)
    fill = problem._fill_uses
    calls = []

    def fill_then_cancel(*args) -> None:
        calls.append(1)
        fill(*args)
        if len(calls) == 3:
            control.cancel()

    monkeypatch.setattr(problem, "CANDS_PER_CHECK", 256)  # 3,000+ rows x 16: many chunks
    monkeypatch.setattr(problem, "_fill_uses", fill_then_cancel)
    t0 = time.perf_counter()
    res = match(snap, params, control)
    assert time.perf_counter() - t0 < 30.0  # far from its 60 s
    assert len(calls) == 3  # stopped at the check after the third chunk
    assert res.partial and res.assignments == [] and res.objective == 0
    monkeypatch.undo()
    done = match(snap, params.model_copy(update={"time_limit_s": 3.0}))
    assert res.bound >= done.bound >= done.objective > 0


def test_cancel_while_pricing_rebuilds_the_model_returns_the_verified_answer_so_far(monkeypatch):
    from market_factories import check_feasible

    from matcher import problem

    snap = generate_market(600, 60, 12, seed=4)  # the independent checker is quadratic
    # Short lists, so that pricing has sites to add and rebuilds the model.
    params = RunParams(time_limit_s=8.0, seed=1, candidates_per_project=4)
    phases: list[str] = []
    control = RunControl(8.0, on_progress=lambda p: phases.append(p.phase))
    fill = problem._fill_uses
    after = []

    def fill_or_cancel(*args) -> None:
        if "solve" in phases:  # the first round is solved: this is pricing's model
            after.append(1)
            control.cancel()
        fill(*args)

    monkeypatch.setattr(problem, "_fill_uses", fill_or_cancel)
    res = match(snap, params, control, solver=SolveParams(complete_lists_max_pairs=0))
    assert after == [1]  # the rebuild stopped at its first check
    assert res.partial and res.objective > 0 and res.bound >= res.objective
    check_feasible(snap, res)  # independent checker: capacities, eligibility, objective
    assert res.objective == pytest.approx(sum(a.value for a in res.assignments))


def test_the_garbage_collector_is_paused_during_a_run_and_restored_after():
    import gc

    seen: list[bool] = []
    control = RunControl(1.0, on_progress=lambda p: seen.append(gc.isenabled()))
    assert gc.isenabled()
    match(generate_market(200, 20, 12, seed=1), RunParams(time_limit_s=1.0), control)
    assert seen and not any(seen)  # off in every phase
    assert gc.isenabled()
