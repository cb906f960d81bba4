"""Instant candidates through HTTP: ranking, near misses and their rules, drafts, visibility,
bad input, and the site side cached per market version (each test on both backends)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from service_testkit import Api, Tenant, assert_problem, ok, project_body

from matcher.kernels import ELIGIBLE, RULES
from matcher.problem import build_problem
from schemas.market import MarketSnapshot, RunParams
from service.db import read_supply_version
from service.flows import candidates as flow

CERT = {
    "kind": "iso_13485",
    "issuer": "TUV SUD",
    "device_classes": ["II", "III"],
    "valid_from": "2025-01-01",
    "valid_until": "2029-12-31",
}
MONTHS = ("2027-01", "2027-02", "2027-03")


@pytest.fixture
def api(api: Api) -> Api:
    # The test database restarts its market version at 0: drop what an earlier test cached.
    flow.site_side_cache(api.backend.db).forget()
    return api


def _site(api: Api, cdmo: Tenant, name: str, *, price: float = 80, free=(450, 450, 450), **kw: Any):
    site = api.site(cdmo, name=name, **kw)
    for month, hours in zip(MONTHS, free, strict=True):
        api.listing(
            cdmo,
            site["id"],
            month=month,
            capacity_hours=hours,
            reserved_hours=0,
            price_per_hour=price,
        )
    return site


def _project(**kw: Any) -> dict[str, Any]:
    return project_body(**{"target_markets": ["CN"], **kw})


def _market(api: Api) -> dict[str, Any]:
    """Two eligible sites, and one near miss per rule: certificate, capacity, budget."""
    c1, c2, c3 = api.cdmo("Alpha"), api.cdmo("Beta"), api.cdmo("Gamma")
    return {
        "cdmos": (c1, c2, c3),
        "cheap": _site(api, c1, "cheap", price=60),
        "dear": _site(api, c2, "dear", price=90),
        "uncertified": _site(api, c3, "uncertified", price=50, certifications=[]),
        "short": _site(api, c2, "short", price=40, free=(450, 100, 450)),
        "wrong_kind": _site(api, c3, "wrong kind", categories=["ivd"]),
    }


def test_project_candidates_rank_sites_and_name_the_rule_of_each_near_miss(api: Api) -> None:
    m = _market(api)
    maker = api.maker()
    project = api.project(maker, **_project())
    body = ok(maker.get(f"/v1/projects/{project['id']}/candidates"))
    assert body["project_id"] == project["id"] and body["placeable"] is True
    assert body["market_version"] == api.market_version()
    (source,) = body["sources"]
    assert source["role"] == "primary" and source["share"] == 1.0
    assert source["counts"] == {
        "category_or_class": 1,
        "process": 0,
        "certification": 1,
        "market": 0,
        "excluded": 0,
        "budget": 0,
        "capacity": 1,
        "eligible": 2,
    }
    cheap, dear = source["candidates"]
    assert (cheap["site_id"], dear["site_id"]) == (m["cheap"]["id"], m["dear"]["id"])
    assert cheap["cdmo_id"] == m["cdmos"][0].id and cheap["site_name"] == "cheap"
    assert cheap["value"] > dear["value"]
    assert cheap["cost"] == pytest.approx(360 * 60) and dear["cost"] == pytest.approx(360 * 90)
    for c in (cheap, dear):
        parts = c["value_parts"]
        assert np.floor(sum(parts.values()) + 0.5) == c["value"]
        assert parts["cost"] == pytest.approx(-0.01 * c["cost"])
        assert c["in_target_market"] and c["fit"] == pytest.approx(0.75 * c["quality"] + 0.25)
        assert c["capacity_suffices"]
        assert c["capacity"] == [
            {
                "process": "catheter_assembly",
                "needed_hours": 360.0,
                "free_hours": 1350.0,
                "short_hours": 0.0,
                "short_months": [],
            }
        ]
    misses = {x["site_id"]: x for x in source["near_misses"]}
    assert set(misses) == {m["uncertified"]["id"], m["short"]["id"]}
    uncertified, short = misses[m["uncertified"]["id"]], misses[m["short"]["id"]]
    assert uncertified["rule"] == "certification" and "iso_13485" in uncertified["detail"]
    assert uncertified["capacity_suffices"]
    assert short["rule"] == "capacity" and not short["capacity_suffices"]
    assert short["capacity"][0]["short_months"] == ["2027-02"]
    assert short["capacity"][0]["short_hours"] == 20.0
    assert "20 h" in short["detail"]
    # Near misses are ranked by the value they would have: the cheapest site first.
    assert [x["site_id"] for x in source["near_misses"]] == [
        m["short"]["id"],
        m["uncertified"]["id"],
    ]
    assert body["blockers"] == []


def test_excluded_cdmo_budget_and_limit(api: Api) -> None:
    m = _market(api)
    maker = api.maker()
    beta = m["cdmos"][1]
    # Budget 25000: "dear" (32400) is over it; Beta is excluded ("short" is Beta's too, but
    # fails capacity as well: two rules, so not a near miss).
    project = api.project(maker, **_project(excluded_cdmo_ids=[beta.id], budget_ceiling=25000))
    body = ok(maker.get(f"/v1/projects/{project['id']}/candidates?limit=1"))
    (source,) = body["sources"]
    assert [c["site_id"] for c in source["candidates"]] == [m["cheap"]["id"]]
    (miss,) = source["near_misses"]  # limit applies to near misses too
    assert miss["rule"] == "certification"
    body = ok(maker.get(f"/v1/projects/{project['id']}/candidates?limit=50"))
    rules = {x["site_id"]: x["rule"] for x in body["sources"][0]["near_misses"]}
    assert rules == {m["uncertified"]["id"]: "certification"}
    assert body["sources"][0]["counts"]["excluded"] == 2  # "dear" and "short": excluded first
    cheaper_cap = api.project(maker, **_project(budget_ceiling=25000))
    body = ok(maker.get(f"/v1/projects/{cheaper_cap['id']}/candidates"))
    rules = {x["site_id"]: (x["rule"], x["detail"]) for x in body["sources"][0]["near_misses"]}
    assert rules[m["dear"]["id"]][0] == "budget" and "25,000.00" in rules[m["dear"]["id"]][1]


def test_a_project_nothing_can_take_says_why(api: Api) -> None:
    m = _market(api)
    maker = api.maker()
    project = api.project(maker, **_project(required_certifications=["iso_13485", "mdsap"]))
    body = ok(maker.get(f"/v1/projects/{project['id']}/candidates"))
    assert body["placeable"] is False and body["sources"][0]["candidates"] == []
    (blocker,) = body["blockers"]
    assert blocker["rule"] == "certification" and "4 of 5" in blocker["detail"]
    misses = body["sources"][0]["near_misses"]
    assert {x["rule"] for x in misses} == {"certification"}
    assert all("mdsap" in x["detail"] for x in misses)
    assert m["wrong_kind"]["id"] not in {x["site_id"] for x in misses}


def test_second_source_needs_two_cdmos(api: Api) -> None:
    alpha = api.cdmo("Alpha")
    _site(api, alpha, "a1")
    _site(api, alpha, "a2", price=70)
    maker = api.maker()
    project = api.project(maker, **_project(second_source_required=True, second_source_share=0.25))
    body = ok(maker.get(f"/v1/projects/{project['id']}/candidates"))
    primary, second = body["sources"]
    assert (primary["role"], primary["share"]) == ("primary", 0.75)
    assert (second["role"], second["share"]) == ("second_source", 0.25)
    # Loads are split by share and rounded up to whole hours: 100, 120, 140 x 0.25.
    assert second["candidates"][0]["capacity"][0]["needed_hours"] == 25 + 30 + 35
    assert body["placeable"] is False
    assert [b["rule"] for b in body["blockers"]] == ["second_source_separation"]
    _site(api, api.cdmo("Beta"), "b1")
    body = ok(maker.get(f"/v1/projects/{project['id']}/candidates"))
    assert body["placeable"] is True and body["blockers"] == []


def test_draft_body_is_quoted_like_the_posted_project_and_nothing_is_written(api: Api) -> None:
    _market(api)
    maker = api.maker()
    version = api.market_version()
    draft = ok(maker.post("/v1/candidates", json=_project()))
    assert draft["project_id"] is None
    assert api.market_version() == version
    assert ok(maker.get("/v1/projects"))["items"] == []
    project = api.project(maker, **_project())
    posted = ok(maker.get(f"/v1/projects/{project['id']}/candidates"))
    assert {k: v for k, v in posted.items() if k not in ("project_id", "market_version")} == {
        k: v for k, v in draft.items() if k not in ("project_id", "market_version")
    }
    # Operators quote for a maker they name, as they post for one.
    body = _project(maker_id=maker.id)
    assert ok(api.operator.post("/v1/candidates", json=body))["sources"] == draft["sources"]


def test_who_may_ask(api: Api) -> None:
    m = _market(api)
    maker, other = api.maker(), api.maker()
    project = api.project(maker, **_project())
    path = f"/v1/projects/{project['id']}/candidates"
    ok(maker.get(path))
    ok(api.operator.get(path))
    assert_problem(other.get(path), 404, "not-found")
    cdmo = m["cdmos"][0]
    api.propose(project["id"], m["cheap"]["id"])
    ok(cdmo.get(f"/v1/projects/{project['id']}"))  # it sees the project proposed to it...
    assert_problem(cdmo.get(path), 404, "not-found")  # ...never the competition for it
    assert_problem(cdmo.post("/v1/candidates", json=_project()), 403, "forbidden")
    assert_problem(maker.get("/v1/projects/prj_missing/candidates"), 404, "not-found")
    assert maker.client.get(path).status_code == 401


@pytest.mark.parametrize("query", ["limit=0", "limit=51", "limit=ten", "limit=-1"])
def test_bad_limit_is_a_422_problem(api: Api, query: str) -> None:
    maker = api.maker()
    project = api.project(maker, **_project())
    assert_problem(
        maker.get(f"/v1/projects/{project['id']}/candidates?{query}"), 422, "validation-error"
    )
    assert_problem(maker.post(f"/v1/candidates?{query}", json=_project()), 422, "validation-error")


@pytest.mark.parametrize(
    "body",
    [
        _project(window_end="2026-12"),
        _project(loads=[{"process": "catheter_assembly", "monthly_hours": [1, 2]}]),
        _project(target_markets=[]),
        _project(priority=11),
        _project(excluded_cdmo_ids=["org_nobody"]),
        {**_project(), "colour": "red"},
        {"title": "only a title"},
        [],
    ],
)
def test_invalid_draft_is_a_422_problem_and_writes_nothing(api: Api, body: Any) -> None:
    maker = api.maker()
    version = api.market_version()
    assert_problem(maker.post("/v1/candidates", json=body), 422, "validation-error")
    assert api.market_version() == version


def test_operator_draft_must_name_its_maker(api: Api) -> None:
    problem = assert_problem(
        api.operator.post("/v1/candidates", json=_project()), 422, "validation-error"
    )
    assert "maker_id" in problem["detail"]
    other = api.maker()
    assert_problem(
        api.maker().post("/v1/candidates", json=_project(maker_id=other.id)), 403, "forbidden"
    )


def test_site_side_is_cached_per_market_version(api: Api) -> None:
    m = _market(api)
    maker = api.maker()
    project = api.project(maker, **_project())
    cache = flow.site_side_cache(api.backend.db)
    path = f"/v1/projects/{project['id']}/candidates"
    first = ok(maker.get(path))
    builds = cache.builds
    for _ in range(3):
        assert ok(maker.get(path)) == first
    assert cache.builds == builds  # no re-encoding while the market stands still
    # The market moves: "cheap" loses its capacity in 2027-03. The very next answer has it.
    cheap = m["cheap"]["id"]
    cdmo = m["cdmos"][0]
    listing = next(
        x for x in ok(cdmo.get(f"/v1/sites/{cheap}/listings"))["items"] if x["month"] == "2027-03"
    )
    ok(
        cdmo.patch(
            f"/v1/listings/{listing['id']}",
            json={"capacity_hours": 10},
            headers={"If-Match": f'"{listing["version"]}"'},
        )
    )
    moved = ok(maker.get(path))
    assert moved["market_version"] == api.market_version() > first["market_version"]
    assert cache.builds == builds + 1
    assert cheap not in {c["site_id"] for c in moved["sources"][0]["candidates"]}
    miss = next(x for x in moved["sources"][0]["near_misses"] if x["site_id"] == cheap)
    assert miss["rule"] == "capacity" and miss["capacity"][0]["short_months"] == ["2027-03"]


def _supply_version(api: Api) -> int:
    with api.backend.db.session(write=False) as session:
        return read_supply_version(session)


def test_the_site_side_follows_the_supply_version_not_project_writes(api: Api) -> None:
    m = _market(api)
    maker = api.maker()
    project = api.project(maker, **_project())
    cache = flow.site_side_cache(api.backend.db)
    path = f"/v1/projects/{project['id']}/candidates"
    first = ok(maker.get(path))
    builds, supply = cache.builds, _supply_version(api)

    # Project writes (a new project, an edit) move the market version, not the supply's:
    # the cached site side serves them, and the answer is the same.
    other = api.project(maker, **_project(priority=2))
    edited = ok(
        maker.patch(
            f"/v1/projects/{other['id']}",
            json={"priority": 4},
            headers={"If-Match": f'"{other["version"]}"'},
        )
    )
    assert api.market_version() > first["market_version"]
    assert _supply_version(api) == supply
    assert ok(maker.get(path))["sources"] == first["sources"]
    assert ok(maker.get(f"/v1/projects/{edited['id']}/candidates"))["sources"]
    assert cache.builds == builds

    # A listing write moves the supply version: the next answer is rebuilt and reflects it.
    cheap, cdmo = m["cheap"]["id"], m["cdmos"][0]
    listing = next(
        x for x in ok(cdmo.get(f"/v1/sites/{cheap}/listings"))["items"] if x["month"] == "2027-03"
    )
    ok(
        cdmo.patch(
            f"/v1/listings/{listing['id']}",
            json={"capacity_hours": 10},
            headers={"If-Match": f'"{listing["version"]}"'},
        )
    )
    assert _supply_version(api) == supply + 1
    moved = ok(maker.get(path))
    assert cache.builds == builds + 1
    assert cheap not in {c["site_id"] for c in moved["sources"][0]["candidates"]}

    # Never an older supply version: a side built at an older version is not served.
    stale_side = cache.at(supply + 1)
    ok(
        cdmo.patch(
            f"/v1/listings/{listing['id']}",
            json={"capacity_hours": 500},
            headers={"If-Match": f'"{listing["version"] + 1}"'},
        )
    )
    assert cache.at(_supply_version(api)) is not stale_side
    assert cache.builds == builds + 2
    back = ok(maker.get(path))
    assert cheap in {c["site_id"] for c in back["sources"][0]["candidates"]}
    assert cache.builds == builds + 2


def test_candidates_equal_the_batch_on_the_same_market(api: Api) -> None:
    """What the matcher would consider for each project, from the operator's snapshot."""
    _market(api)
    maker = api.maker()
    projects = [
        api.project(maker, **_project()),
        api.project(maker, **_project(budget_ceiling=25000, priority=3)),
        api.project(maker, **_project(second_source_required=True)),
        api.project(
            maker,
            **_project(
                window_start="2027-02",
                loads=[{"process": "catheter_assembly", "monthly_hours": [400, 10]}],
            ),
        ),
    ]
    snap = MarketSnapshot.model_validate(ok(api.operator.get("/v1/market/snapshot")))
    problem = build_problem(snap, RunParams(candidates_per_project=50))
    enc, scored = problem.enc, problem.scored
    for p in projects:
        body = ok(maker.get(f"/v1/projects/{p['id']}/candidates?limit=50"))
        j = enc.project_ids.index(p["id"])
        rows = [int(r) for r in enc.project_rows[j] if r >= 0]
        for r, source in zip(rows, body["sources"], strict=True):
            lo, hi = scored.cand_ptr[r], scored.cand_ptr[r + 1]
            batch = [
                (enc.site_ids[s], int(v))
                for s, v in zip(scored.cand_site[lo:hi], scored.cand_value[lo:hi], strict=True)
            ]
            assert [(c["site_id"], c["value"]) for c in source["candidates"]] == batch
            counts = scored.counts[r]
            assert source["counts"]["eligible"] == counts[ELIGIBLE]
            assert [source["counts"][rule] for rule in RULES] == counts[:ELIGIBLE].tolist()


def test_threads_asking_at_a_new_version_share_one_build(api: Api) -> None:
    _market(api)
    maker = api.maker()
    project = api.project(maker, **_project())
    cache = flow.site_side_cache(api.backend.db)
    version = api.market_version()
    supply = _supply_version(api)
    builds = cache.builds
    sides: list[Any] = []

    def ask() -> None:
        sides.append(cache.at(supply))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert cache.builds == builds + 1 and len(sides) == 6
    assert all(side is sides[0] and side.version == version for side in sides)
    # The HTTP answer at this version uses that same side (no second build).
    ok(maker.get(f"/v1/projects/{project['id']}/candidates"))
    assert cache.builds == builds + 1
