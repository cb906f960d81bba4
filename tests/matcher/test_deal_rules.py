"""What the deals need from the matcher: one rounding rule shared with the service, and
forbidden (project, site) pairs never proposed."""

from __future__ import annotations

import numpy as np
from market_factories import PM, check_feasible, project, site, snapshot

from matcher.encode import encode, free_whole_hours, whole_hours
from matcher.market import match
from schemas.market import PairRef, Proposal, Role, RunParams
from service.flows.capacity import placement_hours

FAST = RunParams(time_limit_s=2, workers=1, deterministic=True)


def test_whole_hours_rounds_loads_up_and_capacity_down_for_scalars_and_arrays() -> None:
    assert whole_hours(100.0, 0.3) == 30  # 30.000000000000004 is float noise, not 31
    assert whole_hours(10.1) == 11 and whole_hours(0.0) == 0 and whole_hours(-3.0) == 0
    assert isinstance(whole_hours(5.5, 0.5), int)
    arr = whole_hours(np.array([100.0, 10.1, 0.0]), np.array([0.3, 1.0, 1.0]))
    assert arr.dtype == np.int64 and arr.tolist() == [30, 11, 0]
    assert free_whole_hours(10.9, 0.2) == 10 and free_whole_hours(5.0, 9.0) == 0
    assert free_whole_hours(np.array([10.9, 3.0]), np.array([0.2, 0.0])).tolist() == [10, 3]


def test_the_service_holds_exactly_what_the_matcher_charges() -> None:
    p = project("P1", loads={PM: [10.1, 33.3, 7.0]}, second_source=True, share=0.35)
    snap = snapshot([site("A1", cdmo="CA"), site("B1", cdmo="CB")], [p])
    enc = encode(snap, FAST)
    for role in (Role.PRIMARY, Role.SECOND_SOURCE):
        r = int(enc.project_rows[0, 0 if role == Role.PRIMARY else 1])
        units = enc.rows.ent_units[enc.rows.ent_ptr[r] : enc.rows.ent_ptr[r + 1]]
        held = placement_hours(p, "A1", role)
        assert sorted(held.values()) == sorted(int(u) for u in units if u > 0)


def test_a_forbidden_pair_is_never_proposed_and_the_next_best_site_is() -> None:
    sites = [site("GOOD", on_time=1.0), site("OTHER", on_time=0.3)]
    base = snapshot(sites, [project("P1")])
    assert [a.site_id for a in match(base, FAST).assignments] == ["GOOD"]
    banned = base.model_copy(update={"forbidden": [PairRef(project_id="P1", site_id="GOOD")]})
    res = match(banned, FAST)
    check_feasible(banned, res)
    assert [a.site_id for a in res.assignments] == ["OTHER"]
    # A pin to a forbidden site is not forced (the site is not a candidate): noted.
    pinned = banned.model_copy(update={"pinned": [Proposal(project_id="P1", site_id="GOOD")]})
    res = match(pinned, FAST)
    assert [a.site_id for a in res.assignments] == ["OTHER"]
    assert any("not eligible" in n for n in res.notes)


def test_forbidding_every_site_leaves_the_project_unplaced() -> None:
    sites = [site("S1"), site("S2")]
    snap = snapshot(sites, [project("P1")])
    snap = snap.model_copy(
        update={"forbidden": [PairRef(project_id="P1", site_id=s.id) for s in sites]}
    )
    res = match(snap, FAST)
    assert res.assignments == [] and [u.project_id for u in res.unassigned] == ["P1"]
