"""Nothing left on the table: every answer is maximal over the WHOLE market.

The property is checked by an independent brute-force scan over the schema objects (the
oracle of market_factories, no matcher code): with the capacity an answer leaves free (whole
hours, as the model counts them), no unplaced project fits at any eligible site, or pair of
sites for a second source (other CDMO, other region unless relaxed, blended cost within the
budget). Values are positive everywhere in these markets (low prices), so "fits" is all that
matters.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from market_factories import (
    CA,
    CDMO_ONLY,
    PM,
    _months,
    check_feasible,
    first_failed_rule,
    listings,
    project,
    site,
    snapshot,
    source_cost,
)

from matcher.complete import complete
from matcher.control import SolveParams
from matcher.market import match
from matcher.model import NONE
from matcher.problem import build_problem
from matcher.verify import verify_assignment
from schemas.market import BlockReason, Proposal, Region, RunParams, SecondSourceSeparation

PARAMS = RunParams(time_limit_s=1, workers=1, deterministic=True)
REGIONS = (Region.CN, Region.SEA, Region.OTHER)  # no market-access certificate needed


def _units_left(snap, assignments) -> dict:
    """Whole free hours per (site, process, month) once the assignments take their loads."""
    left = {(x.site_id, x.process, x.month): math.floor(x.free_hours + 1e-6) for x in snap.listings}
    projects = {p.id: p for p in snap.projects}
    for a in assignments:
        p = projects[a.project_id]
        for load in p.loads:
            for m, h in zip(_months(p), load.monthly_hours, strict=True):
                need = max(0, math.ceil(a.share * h - 1e-6))
                if need:
                    left[(a.site_id, load.process, m)] -= need
    return left


def _fits(snap, p, s, share, left) -> bool:
    for load in p.loads:
        for m, h in zip(_months(p), load.monthly_hours, strict=True):
            need = max(0, math.ceil(share * h - 1e-6))
            if need > left.get((s.id, load.process, m), 0):
                return False
    return True


def _eligible(snap, p, s, share) -> bool:
    """Every rule but capacity (capacity is checked against what the answer leaves)."""
    return first_failed_rule(snap, p, s, share) in (None, "capacity")


def places_left(snap, assignments) -> list[str]:
    """Brute force: unplaced projects that still fit somewhere as the answer stands."""
    left = _units_left(snap, assignments)
    placed = {a.project_id for a in assignments}
    found = []
    for p in snap.projects:
        if p.id in placed:
            continue
        if not p.second_source_required:
            if any(_eligible(snap, p, s, 1.0) and _fits(snap, p, s, 1.0, left) for s in snap.sites):
                found.append(p.id)
            continue
        share = p.second_source_share
        prim = [s for s in snap.sites if _eligible(snap, p, s, 1 - share)]
        prim = [s for s in prim if _fits(snap, p, s, 1 - share, left)]
        sec = [s for s in snap.sites if _eligible(snap, p, s, share)]
        sec = [s for s in sec if _fits(snap, p, s, share, left)]
        for a, b in itertools.product(prim, sec):
            if a.cdmo_id == b.cdmo_id:
                continue
            if p.second_source_separation == SecondSourceSeparation.REGION and a.region == b.region:
                continue
            if p.budget_ceiling is not None:
                paid = source_cost(snap, p, a.id, 1 - share) + source_cost(snap, p, b.id, share)
                if paid > p.budget_ceiling - 0.02:  # the matcher counts whole cents
                    continue
            found.append(p.id)
            break
    return found


@st.composite
def markets(draw):
    n_sites = draw(st.integers(1, 6))
    n_cdmos = draw(st.integers(1, n_sites))
    sites, lst = [], []
    for i in range(n_sites):
        sid = f"S{i}"
        procs = draw(st.sampled_from([(PM,), (CA,), (PM, CA)]))
        sites.append(
            site(
                sid, cdmo=f"C{i % n_cdmos}", region=draw(st.sampled_from(REGIONS)), processes=procs
            )
        )
        cap = draw(st.sampled_from([0.0, 10.0, 25.0, 40.0, 100.0]))
        price = draw(st.sampled_from([1.0, 5.0, 20.0]))
        lst += listings(sid, processes=procs, capacity=cap, price=price)
    projects = []
    for j in range(draw(st.integers(1, 8))):
        loads = {
            proc: [float(draw(st.integers(0, 30))) for _ in range(3)]
            for proc in draw(st.sampled_from([(PM,), (CA,), (PM, CA)]))
        }
        two = draw(st.booleans())
        projects.append(
            project(
                f"P{j}",
                loads=loads,
                markets=(draw(st.sampled_from(REGIONS)),),
                priority=draw(st.integers(1, 10)),
                budget=draw(st.sampled_from([None, None, 300.0, 800.0, 3000.0])),
                second_source=two,
                share=draw(st.sampled_from([0.3, 0.5])),
                separation=draw(st.sampled_from(list(SecondSourceSeparation))),
                excluded=draw(st.sampled_from([(), ("C0",)])),
            )
        )
    return snapshot(sites, projects, lst)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markets())
def test_the_last_pass_alone_leaves_nothing_that_fits(snap):
    """From an empty answer, the pass places greedily; what it returns is verified and maximal."""
    problem = build_problem(snap, PARAMS)
    empty = np.full(problem.model.n_items, NONE, dtype=np.int64)
    problem, choice, _ = complete(problem, empty)
    verify_assignment(problem.model, choice)
    from matcher.market import assignments

    placed = assignments(problem, choice)
    assert places_left(snap, placed) == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markets())
def test_every_answer_of_match_is_maximal_and_explained_truthfully(snap):
    res = match(
        snap,
        RunParams(time_limit_s=1, workers=1, deterministic=True, candidates_per_project=1),
        solver=SolveParams(complete_lists_max_pairs=0),  # keep the one-site lists
    )
    check_feasible(snap, res)
    assert places_left(snap, res.assignments) == []
    # A project explained by capacity has no site with room for it anywhere (single source).
    left = _units_left(snap, res.assignments)
    projects = {p.id: p for p in snap.projects}
    for u in res.unassigned:
        p = projects[u.project_id]
        assert u.reason != BlockReason.NOT_REACHED
        if u.reason == BlockReason.CAPACITY and not p.second_source_required:
            assert not any(
                _eligible(snap, p, s, 1.0) and _fits(snap, p, s, 1.0, left) for s in snap.sites
            )
            assert u.shortfalls


def test_a_project_outside_its_candidate_list_is_placed_by_the_last_pass():
    # One candidate per project: both projects rank S0 first; S0 holds only one of them, so
    # the other is left out of its list's only site while S1 has room.
    sites = [site("S0"), site("S1", on_time=0.5)]
    lst = listings("S0", capacity=15.0) + listings("S1")
    snap = snapshot(sites, [project("P1"), project("P2")], lst)
    problem = build_problem(snap, RunParams(candidates_per_project=1))
    assert problem.model.n_cand == 2 and set(problem.model.cand_bin.tolist()) == {0}
    choice = np.array([problem.model.cand_ptr[0], NONE], dtype=np.int64)
    problem, choice, placed = complete(problem, choice)
    assert placed == 1
    assert verify_assignment(problem.model, choice) > 0
    assert problem.model.cand_bin[choice[1]] == 1


def test_a_cancel_during_the_last_pass_returns_the_answer_before_it(monkeypatch):
    """What the pass placed before the cancel needs a new model (an assembly, seconds at
    100000 x 10000): the cancelled run keeps the answer it had, verified as it was."""
    import matcher.complete as pass_module
    from matcher.control import RunControl

    sites = [site("S0"), site("S1", on_time=0.5)]
    snap = snapshot(sites, [project(f"P{i}") for i in range(6)], listings("S0") + listings("S1"))
    problem = build_problem(snap, PARAMS)
    empty = np.full(problem.model.n_items, NONE, dtype=np.int64)
    assert complete(problem, empty)[2] > 0  # uncancelled, the pass places projects
    control = RunControl(60.0)
    kernel = pass_module._complete_kernel

    def then_cancel(*args):  # the first chunk is placed, then the run is cancelled
        placed = kernel(*args)
        control.cancel()
        return placed

    monkeypatch.setattr(pass_module, "CHUNK", 2)
    monkeypatch.setattr(pass_module, "_complete_kernel", then_cancel)
    same, choice, placed = complete(problem, empty, control)
    assert placed == 0 and same is problem and np.array_equal(choice, empty)
    # Cancelled while the answer's model is assembled (the pass itself was done): the same.
    monkeypatch.setattr(pass_module, "_complete_kernel", kernel)
    assemble = pass_module.assemble

    def cancel_then_assemble(*args):
        control.cancel()
        return assemble(*args)

    control = RunControl(60.0)
    monkeypatch.setattr(pass_module, "assemble", cancel_then_assemble)
    same, choice, placed = complete(problem, empty, control)
    assert placed == 0 and same is problem and np.array_equal(choice, empty)


def test_the_last_pass_keeps_pins_and_separation():
    sites = [
        site("A", cdmo="CA"),
        site("B", cdmo="CB"),
        site("E", cdmo="CE", region=Region.SEA, on_time=0.5),
    ]
    p1 = project("P1", second_source=True, markets=(Region.SEA,))
    p2 = project("P2", second_source=True, markets=(Region.SEA,), separation=CDMO_ONLY)
    pin = [Proposal(project_id="P2", site_id="A", second_site_id="B")]
    snap = snapshot(sites, [p1, p2], pinned=pin)
    problem = build_problem(snap, PARAMS)
    empty = np.full(problem.model.n_items, NONE, dtype=np.int64)
    empty[problem.model.fixed != NONE] = problem.model.fixed[problem.model.fixed != NONE]
    problem, choice, _ = complete(problem, empty)
    verify_assignment(problem.model, choice)
    from matcher.market import assignments

    got = {(a.project_id, a.site_id) for a in assignments(problem, choice)}
    assert {("P2", "A"), ("P2", "B")} <= got
    # P1 must pair a CN site with the SEA one: one of its sources is at E.
    assert ("P1", "E") in got


def test_warm_up_compiles_every_kernel_of_the_pass_and_the_explanations():
    from matcher import complete as c

    assert c.warm_up() >= 0
    for kernel in (c.scan_row, c.best_pair, c.cheapest_pair, c._complete_kernel):
        assert kernel.signatures, kernel.__name__
