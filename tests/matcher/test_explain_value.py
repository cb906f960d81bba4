"""Explanations of a finished run: the value broken into parts sums to the matcher's value for
every placement; why-not figures on a hand-made market; utilisation and bottlenecks agree with
the answer."""

from __future__ import annotations

import pytest
from market_factories import PM, cert, listings, project, site, snapshot

from matcher.generate import generate_market
from matcher.market import match
from matcher.run_explain import bottlenecks, run_view, utilisation, why_here, why_not
from schemas.market import CertificationKind, Region, RegulatoryClass, Role, RunParams

FAST = RunParams(time_limit_s=2, workers=1, deterministic=True)
MDR = CertificationKind.EU_MDR
ISO = CertificationKind.ISO_13485


def _view(snap, res):
    return run_view(snap, FAST, [(a.project_id, a.role, a.site_id) for a in res.assignments])


def _row(view, pid, role=Role.PRIMARY):
    j = view.enc.project_ids.index(pid)
    return int(view.enc.project_rows[j, 1 if role == Role.SECOND_SOURCE else 0])


@pytest.mark.parametrize("seed", [1, 2])
def test_parts_sum_to_the_matchers_value_for_every_placement(seed):
    snap = generate_market(80, 12, months=6, seed=seed, start="2027-01", capacity_scale=0.4)
    res = match(snap, FAST)
    assert res.assignments and res.unassigned  # a tight market: both kinds to explain
    view = _view(snap, res)
    for a in res.assignments:
        why = why_here(view, _row(view, a.project_id, a.role))
        b = why.breakdown
        parts = b.priority + b.quality + b.market + b.cost + b.stability + b.rounding
        assert b.value == a.value
        assert parts == pytest.approx(a.value, abs=1e-6)
        assert abs(b.rounding) <= 0.5
        assert why.cost == pytest.approx(a.cost)
        assert why.site_id == a.site_id and 1 <= why.rank <= why.eligible_sites
        for alt in why.alternatives:
            assert alt.value_given_up == b.value - alt.value
            if alt.eligible and alt.lacks == "capacity":
                assert alt.shortfalls and all(x.short_hours > 0 for x in alt.shortfalls)
    for u in res.unassigned:
        why = why_not(view, _row(view, u.project_id))
        assert why.detail
        if why.capacity_sites == 0:  # no site passes the rules: the matcher's own reason
            assert why.reason == u.reason.value, (why, u)
        else:
            assert why.reason in ("capacity", "outvalued", "no_second_source")


def test_the_alternative_full_once_the_answer_is_served_lacks_capacity():
    # Two projects, two sites; the better site can take only one of them.
    good, poor = site("S1", on_time=1.0), site("S2", on_time=0.3)
    lst = listings("S1", capacity=10) + listings("S2", capacity=100)
    snap = snapshot([good, poor], [project("P1", priority=9), project("P2", priority=2)], lst)
    res = match(snap, FAST)
    view = _view(snap, res)
    placed = {a.project_id: a.site_id for a in res.assignments}
    assert placed == {"P1": "S1", "P2": "S2"}
    low = why_here(view, _row(view, "P2"))
    (alt,) = low.alternatives
    assert alt.site_id == "S1" and alt.lacks == "capacity"
    assert alt.value_given_up < 0  # worth more, but P1 holds it
    assert sum(x.short_hours for x in alt.shortfalls) == 3 * 10  # 10 h short in each month
    high = why_here(view, _row(view, "P1"))
    assert high.rank == 1 and high.alternatives[0].lacks == ""
    assert "quality" in high.alternatives[0].detail


def test_unplaced_certification_and_full_capacity_with_figures():
    mdr3 = cert(MDR, classes=(RegulatoryClass.III,))
    sites = [
        site(f"E{i}", region=Region.EU, certs=[cert(), mdr3], classes=(RegulatoryClass.III,))
        for i in range(3)
    ] + [site("N1", region=Region.EU, certs=[cert()], classes=(RegulatoryClass.III,))]
    lst = [x for s in sites for x in listings(s.id, capacity=40)]
    big = {PM: [30.0, 30.0, 30.0]}
    projects = [
        project(
            f"P{i}",
            loads=big,
            device_class=RegulatoryClass.III,
            markets=(Region.EU,),
            certs=(ISO, MDR),
            priority=9,
        )
        for i in range(3)
    ] + [
        project(
            "LATE",
            loads={PM: [10.0, 50.0, 10.0]},
            device_class=RegulatoryClass.III,
            markets=(Region.EU,),
            certs=(ISO, MDR),
            priority=1,
        ),
        project(
            "NOCERT",
            device_class=RegulatoryClass.III,
            markets=(Region.EU,),
            certs=(ISO, CertificationKind.FDA_REGISTRATION),
        ),
    ]
    snap = snapshot(sites, projects, lst)
    res = match(snap, FAST)
    view = _view(snap, res)
    late = why_not(view, _row(view, "LATE"))
    assert late.reason == "capacity"
    assert late.capacity_sites == 3
    mdr = next(c for c in late.certifications if c.requirement == "eu_mdr")
    assert mdr.sites == 3  # N1 runs the process but lacks EU MDR for class III
    top = late.capacity_gaps[0]
    # Each MDR site has 10 h left per month; LATE needs 50 h in 2027-02: 40 h short at each.
    assert (top.process, top.month, top.sites_short, top.short_hours) == (
        "precision_machining",
        "2027-02",
        3,
        120,
    )
    assert "120 h" in late.detail and "all 3 are full" in late.detail
    assert "3 of 4 sites serve consumables class III, hold iso_13485 and eu_mdr" in late.detail
    nocert = why_not(view, _row(view, "NOCERT"))
    assert nocert.reason == "certification"
    fda = next(c for c in nocert.certifications if c.requirement == "fda_registration")
    assert fda.sites == 0 and "0 hold fda_registration" in nocert.detail

    cells = utilisation(view, snap)
    assert len(cells.site_id) == len(lst)
    assert list(cells.site_id) == sorted(cells.site_id)
    assert int(cells.used_hours.sum()) == 3 * 90  # the three placed projects, whole hours
    assert (cells.free_hours >= 0).all()
    assert (cells.capacity_hours == 40).all() and (cells.reserved_hours == 0).all()
    neck = bottlenecks(view, snap)
    assert neck.unplaced_projects == 2
    reasons = {d.key: d.projects for d in neck.by_reason}
    assert reasons == {"capacity": 1, "certification": 1}
    assert [d.key for d in neck.certifications] == ["fda_registration"]
    assert neck.capacity[0].month == "2027-02" and neck.capacity[0].projects == 1
    assert {d.key: d.projects for d in neck.by_market} == {"EU": 2}
