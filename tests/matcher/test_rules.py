"""One test pair per hard rule: shown BINDING (the project is left out, for that reason) and
shown SLACK (the same snapshot with the rule satisfied assigns it)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from market_factories import (
    CA,
    PM,
    cert,
    check_feasible,
    first_failed_rule,
    listings,
    project,
    site,
    snapshot,
)

from matcher import kernels
from matcher.generate import generate_market
from matcher.market import match
from matcher.problem import build_problem
from schemas.market import (
    BlockReason,
    CertificationKind,
    DeviceCategory,
    Region,
    RegulatoryClass,
    RunParams,
)

PARAMS = RunParams(time_limit_s=2, workers=1, deterministic=True)
III = RegulatoryClass.III
FDA = CertificationKind.FDA_REGISTRATION


def outcome(snap):
    """(assigned site of P1 or None, its Unassigned or None), checked for feasibility."""
    res = match(snap, PARAMS)
    check_feasible(snap, res)
    placed = [a.site_id for a in res.assignments if a.project_id == "P1"]
    why = [u for u in res.unassigned if u.project_id == "P1"]
    return (placed[0] if placed else None), (why[0] if why else None)


def assert_binding(snap, reason: BlockReason, rule: str):
    placed, why = outcome(snap)
    assert placed is None
    assert why.reason == reason, why
    prob = build_problem(snap, PARAMS)
    assert prob.scored.counts[0, kernels.RULES.index(rule)] == 1
    assert first_failed_rule(snap, snap.projects[0], snap.sites[0]) == rule
    return why


def assert_slack(snap):
    placed, why = outcome(snap)
    assert placed == "S1", why
    assert first_failed_rule(snap, snap.projects[0], snap.sites[0]) is None


def one(s, p, lst=None):
    return snapshot([s], [p], lst)


# --- certification: validity through the whole window ------------------------------------


def test_certificate_expiring_before_the_window_ends_is_binding():
    s = site("S1", certs=[cert(valid_until=dt.date(2027, 3, 30))])  # window ends 2027-03-31
    why = assert_binding(one(s, project("P1")), BlockReason.CERTIFICATION, "certification")
    assert "certificate" in why.detail


def test_certificate_valid_through_the_last_day_is_slack():
    assert_slack(one(site("S1", certs=[cert(valid_until=dt.date(2027, 3, 31))]), project("P1")))


def test_certificate_starting_after_the_first_day_is_binding():
    s = site("S1", certs=[cert(valid_from=dt.date(2027, 1, 2))])
    assert_binding(one(s, project("P1")), BlockReason.CERTIFICATION, "certification")


def test_certificate_starting_on_the_first_day_is_slack():
    assert_slack(one(site("S1", certs=[cert(valid_from=dt.date(2027, 1, 1))]), project("P1")))


# --- certification: scope covers the class -------------------------------------------------


def test_certificate_scope_not_covering_class_iii_is_binding():
    s = site("S1", certs=[cert(classes=(RegulatoryClass.I, RegulatoryClass.II))])
    p = project("P1", device_class=III)
    assert_binding(one(s, p), BlockReason.CERTIFICATION, "certification")


def test_certificate_scope_covering_class_iii_is_slack():
    assert_slack(one(site("S1", certs=[cert(classes=(III,))]), project("P1", device_class=III)))


# Renewals: two certificates of one kind and scope that follow without a gap cover the window
# (2027-01 to 2027-03) together; a gap of one day, or a change of scope, does not.


def test_renewal_with_a_one_day_gap_is_binding():
    gap = [cert(valid_until=dt.date(2027, 2, 14)), cert(valid_from=dt.date(2027, 2, 16))]
    assert_binding(
        one(site("S1", certs=gap), project("P1")), BlockReason.CERTIFICATION, "certification"
    )


def test_renewal_the_day_after_expiry_is_slack():
    chain = [cert(valid_until=dt.date(2027, 2, 14)), cert(valid_from=dt.date(2027, 2, 15))]
    assert_slack(one(site("S1", certs=chain), project("P1")))


def test_overlapping_renewal_chain_of_three_is_slack():
    chain = [
        cert(valid_from=dt.date(2027, 2, 1), valid_until=dt.date(2027, 3, 10)),
        cert(valid_until=dt.date(2027, 1, 20)),
        cert(valid_from=dt.date(2027, 1, 21), valid_until=dt.date(2027, 2, 5)),
        cert(valid_from=dt.date(2027, 3, 11)),
    ]
    assert_slack(one(site("S1", certs=chain), project("P1")))


def test_renewal_with_another_scope_is_binding():
    chain = [
        cert(classes=(RegulatoryClass.I, RegulatoryClass.II), valid_until=dt.date(2027, 2, 14)),
        cert(classes=(RegulatoryClass.II, III), valid_from=dt.date(2027, 2, 15)),
    ]
    assert_binding(
        one(site("S1", certs=chain), project("P1")), BlockReason.CERTIFICATION, "certification"
    )


# --- process --------------------------------------------------------------------------------


def test_missing_process_is_binding():
    s = site("S1", processes=(PM,))
    p = project("P1", loads={PM: [5, 5, 5], CA: [5, 5, 5]})
    assert_binding(one(s, p, listings("S1", processes=(PM,))), BlockReason.PROCESS, "process")


def test_declared_process_without_listing_is_binding():
    s = site("S1", processes=(PM, CA))
    p = project("P1", loads={PM: [5, 5, 5], CA: [5, 5, 5]})
    assert_binding(one(s, p, listings("S1", processes=(PM,))), BlockReason.PROCESS, "process")


def test_process_run_and_listed_is_slack():
    assert_slack(one(site("S1"), project("P1", loads={PM: [5, 5, 5], CA: [5, 5, 5]})))


# --- category and class ---------------------------------------------------------------------


def test_wrong_category_is_binding():
    p = project("P1", category=DeviceCategory.IVD)
    assert_binding(one(site("S1"), p), BlockReason.CATEGORY_OR_CLASS, "category_or_class")


def test_class_not_served_is_binding():
    s = site("S1", classes=(RegulatoryClass.I, RegulatoryClass.II))
    p = project("P1", device_class=III)
    assert_binding(one(s, p), BlockReason.CATEGORY_OR_CLASS, "category_or_class")


def test_category_served_is_slack():
    s = site("S1", categories=(DeviceCategory.CONSUMABLES, DeviceCategory.IVD))
    assert_slack(one(s, project("P1", category=DeviceCategory.IVD)))


# --- overseas-site rule ---------------------------------------------------------------------


def test_us_market_at_a_cn_site_without_fda_is_binding():
    p = project("P1", markets=(Region.US,))
    why = assert_binding(one(site("S1"), p), BlockReason.NO_SITE_IN_MARKET, "market")
    assert "market" in why.detail


def test_us_market_with_fda_not_covering_class_iii_is_binding():
    s = site("S1", certs=[cert(), cert(FDA, classes=(RegulatoryClass.II,))])
    p = project("P1", markets=(Region.US,), device_class=III)
    assert_binding(one(s, p), BlockReason.NO_SITE_IN_MARKET, "market")


def test_us_market_at_a_cn_site_with_fda_is_slack():
    assert_slack(one(site("S1", certs=[cert(), cert(FDA)]), project("P1", markets=(Region.US,))))


def test_us_market_at_a_us_site_is_slack():
    assert_slack(one(site("S1", region=Region.US), project("P1", markets=(Region.US,))))


def test_market_without_an_entry_constrains_nothing():
    assert_slack(one(site("S1"), project("P1", markets=(Region.SEA,))))


def test_every_gated_market_must_be_served():
    p = project("P1", markets=(Region.CN, Region.EU))
    assert_binding(one(site("S1"), p), BlockReason.NO_SITE_IN_MARKET, "market")


# --- exclusions -----------------------------------------------------------------------------


def test_excluded_cdmo_is_binding():
    p = project("P1", excluded=("C-S1",))
    assert_binding(one(site("S1"), p), BlockReason.EXCLUDED, "excluded")


def test_other_cdmo_excluded_is_slack():
    assert_slack(one(site("S1"), project("P1", excluded=("C-OTHER",))))


# --- budget (cost = 30 h x 10 per hour = 300) ------------------------------------------------


def test_budget_below_cost_is_binding():
    why = assert_binding(one(site("S1"), project("P1", budget=299.0)), BlockReason.BUDGET, "budget")
    assert "budget" in why.detail


def test_budget_equal_to_cost_is_slack():
    assert_slack(one(site("S1"), project("P1", budget=300.0)))
    placed = match(one(site("S1"), project("P1", budget=300.0)), PARAMS).assignments
    assert placed[0].cost == pytest.approx(300.0)


# --- capacity of the site alone: a full month ------------------------------------------------


def _feb_reserved(reserved: float):
    lst = listings("S1")
    return [
        x.model_copy(update={"reserved_hours": reserved})
        if x.month == "2027-02" and x.process == PM
        else x
        for x in lst
    ]


def test_full_month_is_binding_with_its_shortfall():
    snap = one(site("S1"), project("P1"), _feb_reserved(95.0))  # 5 h free, 10 h needed
    why = assert_binding(snap, BlockReason.CAPACITY, "capacity")
    assert [(x.site_id, x.process, x.month, x.short_hours) for x in why.shortfalls] == [
        ("S1", PM, "2027-02", 5.0)
    ]


def test_month_with_exactly_the_load_free_is_slack():
    assert_slack(one(site("S1"), project("P1"), _feb_reserved(90.0)))


def test_fractional_free_hours_round_down():
    # 9.5 h free is 9 whole hours: a 10 h load never fits; a 9 h load does.
    assert_binding(
        one(site("S1"), project("P1"), _feb_reserved(90.5)), BlockReason.CAPACITY, "capacity"
    )
    assert_slack(one(site("S1"), project("P1", loads={PM: [9, 9, 9]}), _feb_reserved(90.5)))


# --- the kernels and the oracle agree on a generated market ----------------------------------


def test_eligibility_matches_the_plain_python_oracle():
    snap = generate_market(60, 25, months=6, seed=11)
    prob = build_problem(snap, RunParams(candidates_per_project=256))
    enc = prob.enc
    for j, p in enumerate(snap.projects):
        for r in enc.project_rows[j]:
            if r < 0:
                continue
            share = float(enc.row_share[r])
            want = [first_failed_rule(snap, p, s, share) for s in snap.sites]
            counts = prob.scored.counts[r]
            for i, rule in enumerate(kernels.RULES):
                assert counts[i] == sum(w == rule for w in want), (p.id, rule)
            assert counts[kernels.ELIGIBLE] == sum(w is None for w in want)
            cands = prob.model.cand_bin[prob.model.cand_ptr[r] : prob.model.cand_ptr[r + 1]]
            assert set(cands.tolist()) == {i for i, w in enumerate(want) if w is None}
    assert np.count_nonzero(prob.scored.counts[:, kernels.ELIGIBLE]) > 0
