"""build_problem: the snapshot -> AssignmentModel encoding."""

from __future__ import annotations

import pytest
from market_factories import CA, CDMO_ONLY, PM, listings, project, site, snapshot

from matcher.kernels import NO_VALUE
from matcher.model import NONE
from matcher.problem import (
    FIT_MARKET,
    FIT_QUALITY,
    PROCESSES,
    SnapshotError,
    build_problem,
    site_quality,
)
from schemas.market import MatchWeights, Proposal, Region, RunParams

PARAMS = RunParams()


def cands(prob, item):
    m = prob.model
    return m.cand_bin[m.cand_ptr[item] : m.cand_ptr[item + 1]].tolist()


def value_of(prob, item, site_index):
    m = prob.model
    for c in range(m.cand_ptr[item], m.cand_ptr[item + 1]):
        if m.cand_bin[c] == site_index:
            return int(m.cand_value[c])
    raise AssertionError("not a candidate")


def test_hours_round_loads_up_and_capacity_down():
    lst = [
        x.model_copy(update={"capacity_hours": 100.7, "reserved_hours": 0.2})
        for x in listings("S1")
    ]
    snap = snapshot([site("S1")], [project("P1", loads={PM: [10.2, 0.0, 3.0]})], lst)
    prob = build_problem(snap, PARAMS)
    m = prob.model
    assert m.n_items == 1 and m.n_cand == 1
    # Month 2 has no load: no resource use there.
    uses = m.use_amt[m.use_ptr[0] : m.use_ptr[1]].tolist()
    assert uses == [11, 3]
    res = m.use_res[m.use_ptr[0] : m.use_ptr[1]]
    assert m.capacity[res].tolist() == [100, 100]
    assert [prob.resource(int(r)) for r in res] == [(0, PROCESSES.index(PM), 0), (0, 0, 2)]


def test_value_formula():
    w = MatchWeights(priority=1000, fit=0.5, cost=0.01, stability=500)
    s = site("S1", on_time=0.9)
    snap = snapshot([s], [project("P1", priority=7, markets=(Region.CN,))])
    prob = build_problem(snap, RunParams(weights=w))
    q = site_quality(0.9, 0, 4)
    fit = FIT_QUALITY * q + FIT_MARKET  # the site is in the target market
    cost = 30 * 10.0
    want = 1000 * 7 * (1 + 0.5 * fit) - 0.01 * cost
    assert value_of(prob, 0, 0) == round(want)
    assert prob.cand_cost.tolist() == [pytest.approx(cost)]
    # Out of the target market (SEA has no market rule) the fit loses FIT_MARKET.
    snap_us = snapshot([s], [project("P1", priority=7, markets=(Region.SEA,))])
    prob_us = build_problem(snap_us, RunParams(weights=w))
    want_us = 1000 * 7 * (1 + 0.5 * FIT_QUALITY * q) - 0.01 * cost
    assert value_of(prob_us, 0, 0) == round(want_us)


def test_second_source_becomes_two_linked_items_with_split_loads_and_value():
    sites = [site("A", cdmo="C1"), site("B", cdmo="C2"), site("C", cdmo="C1")]
    p = project("P1", second_source=True, share=0.3, separation=CDMO_ONLY)
    prob = build_problem(snapshot(sites, [p]), PARAMS)
    m, enc = prob.model, prob.enc
    assert m.n_items == 2
    assert m.partner.tolist() == [1, 0]
    assert enc.row_share.tolist() == [0.7, 0.3]
    # Sites A and C are the same CDMO: one bin group.
    assert m.bin_group.tolist() == [0, 1, 0]
    first = m.cand_ptr[0]
    assert m.use_amt[m.use_ptr[first] : m.use_ptr[first + 1]].tolist() == [7, 7, 7]
    second = m.cand_ptr[1]
    assert m.use_amt[m.use_ptr[second] : m.use_ptr[second + 1]].tolist() == [3, 3, 3]
    single = build_problem(snapshot(sites, [project("P1")]), PARAMS)
    for s in range(3):
        whole = value_of(single, 0, s)
        assert abs(value_of(prob, 0, s) - 0.7 * whole) <= 1
        assert abs(value_of(prob, 1, s) - 0.3 * whole) <= 1
    assert m.must_assign.tolist() == [False, False]


def test_candidate_list_is_truncated_with_an_honest_outside_best():
    sites = [site(f"S{i}", on_time=0.5 + i / 10) for i in range(5)]  # S4 best
    prob = build_problem(snapshot(sites, [project("P1")]), RunParams(candidates_per_project=2))
    assert cands(prob, 0) == [4, 3]
    full = build_problem(snapshot(sites, [project("P1")]), RunParams(candidates_per_project=5))
    assert cands(full, 0) == [4, 3, 2, 1, 0]
    assert prob.model.outside_best[0] == value_of(full, 0, 2)
    assert full.model.outside_best[0] == NO_VALUE


def test_pinned_proposal_is_fixed_and_kept_even_outside_the_top_k():
    sites = [site(f"S{i}", on_time=0.5 + i / 10) for i in range(5)]
    pin = [Proposal(project_id="P1", site_id="S0")]
    prob = build_problem(
        snapshot(sites, [project("P1")], pinned=pin), RunParams(candidates_per_project=1)
    )
    assert cands(prob, 0) == [4, 0]
    assert prob.model.cand_bin[prob.model.fixed[0]] == 0
    assert prob.notes == []


def test_pinned_to_an_ineligible_site_is_not_forced_and_noted():
    sites = [site("S0", processes=(CA,)), site("S1")]
    pin = [Proposal(project_id="P1", site_id="S0")]
    prob = build_problem(snapshot(sites, [project("P1")], pinned=pin), PARAMS)
    assert prob.model.fixed.tolist() == [NONE]
    assert any("P1" in n and "not eligible" in n for n in prob.notes)


def test_pins_that_do_not_fit_together_are_not_all_forced():
    lst = [x.model_copy(update={"capacity_hours": 15.0}) for x in listings("S1")]
    pins = [Proposal(project_id="P1", site_id="S1"), Proposal(project_id="P2", site_id="S1")]
    snap = snapshot([site("S1")], [project("P1"), project("P2")], lst, pinned=pins)
    prob = build_problem(snap, PARAMS)
    assert prob.model.fixed[0] != NONE and prob.model.fixed[1] == NONE
    assert any("P2" in n and "does not fit" in n for n in prob.notes)


def test_previous_proposal_gives_hint_and_stability_bonus():
    sites = [site(f"S{i}", on_time=0.5 + i / 10) for i in range(5)]
    prev = [Proposal(project_id="P1", site_id="S1")]
    w = MatchWeights(stability=321)
    base = build_problem(snapshot(sites, [project("P1")]), RunParams(weights=w))
    prob = build_problem(
        snapshot(sites, [project("P1")], previous=prev),
        RunParams(weights=w, candidates_per_project=1),
    )
    assert sorted(cands(prob, 0)) == [1, 4]  # S1 is kept beyond the top-1: the hint exists
    assert prob.model.cand_bin[prob.model.hint[0]] == 1
    assert value_of(prob, 0, 1) - value_of(base, 0, 1) == 321
    assert value_of(prob, 0, 4) == value_of(base, 0, 4)


def test_listing_of_an_undeclared_process_is_ignored():
    s = site("S1", processes=(PM,))
    p = project("P1", loads={CA: [1, 1, 1]})
    prob = build_problem(snapshot([s], [p], listings("S1", processes=(PM, CA))), PARAMS)
    assert prob.model.n_cand == 0


def test_listings_outside_the_horizon_are_ignored():
    lst = listings("S1", months=6, start="2026-10")  # 2026-10 .. 2027-03
    prob = build_problem(snapshot([site("S1")], [project("P1")], lst), PARAMS)
    assert prob.enc.n_months == 3 and prob.model.n_cand == 1


def test_horizon_too_long_is_rejected():
    p1 = project("P1", start="2020-01")
    p2 = project("P2", start="2031-01")
    with pytest.raises(SnapshotError, match="months"):
        build_problem(snapshot([site("S1")], [p1, p2]), PARAMS)


def test_two_pins_for_one_project_are_rejected():
    pins = [Proposal(project_id="P1", site_id="S1")] * 2
    with pytest.raises(SnapshotError, match="two pinned"):
        build_problem(snapshot([site("S1")], [project("P1")], pinned=pins), PARAMS)


def test_empty_market_builds_an_empty_model():
    prob = build_problem(snapshot([], []), PARAMS)
    assert prob.model.n_items == 0 and prob.model.n_res == 0
    prob = build_problem(snapshot([site("S1")], []), PARAMS)
    assert prob.model.n_items == 0
    prob = build_problem(snapshot([], [project("P1")], []), PARAMS)
    assert prob.model.n_items == 1 and prob.model.n_cand == 0
