"""Proposal -> deal lifecycle through HTTP: every move and its refusal, capacity holds (and
their release), holds under concurrent requests, expiry by the periodic job, and what the
next runs see (the market snapshot)."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
from service_testkit import Api, Tenant, assert_problem, ok
from sqlalchemy import update

from service.checks import run_checks
from service.flows import deals
from service.housekeeping import Housekeeper
from service.models import Proposal

MONTHS = ("2027-01", "2027-02", "2027-03")


def _market(api: Api, *, capacity: float = 500, **project_overrides: Any):  # type: ignore[no-untyped-def]
    maker, cdmo = api.maker(), api.cdmo()
    site = api.site(cdmo)
    listings = [
        api.listing(cdmo, site["id"], month=m, capacity_hours=capacity, reserved_hours=0)
        for m in MONTHS
    ]
    project = api.project(maker, **project_overrides)
    return maker, cdmo, site, listings, project


def _act(who: Tenant, proposal_id: str, action: str):  # type: ignore[no-untyped-def]
    return who.post(f"/v1/proposals/{proposal_id}/{action}")


def _reserved(api: Api, listings: list[dict[str, Any]]) -> list[float]:
    return [ok(api.operator.get(f"/v1/listings/{x['id']}"))["reserved_hours"] for x in listings]


def _to_state(api: Api, maker: Tenant, cdmo: Tenant, proposal_id: str, state: str) -> None:
    path = {
        "proposed": [],
        "accepted": [(cdmo, "accept")],
        "confirmed": [(cdmo, "accept"), (maker, "confirm")],
        "declined": [(cdmo, "decline")],
        "withdrawn": [(maker, "withdraw")],
    }[state]
    for who, action in path:
        ok(_act(who, proposal_id, action))


# (state, who, action) -> expected status, and the caller's allowed moves on a 409/403
CASES = [
    ("proposed", "cdmo", "accept", 200, None),
    ("proposed", "cdmo", "decline", 200, None),
    ("proposed", "maker", "withdraw", 200, None),
    ("proposed", "operator", "withdraw", 200, None),
    ("proposed", "operator", "accept", 200, None),
    ("proposed", "maker", "confirm", 409, ["withdrawn"]),
    ("proposed", "maker", "accept", 403, ["withdrawn"]),
    ("proposed", "cdmo", "withdraw", 403, ["accepted", "declined"]),
    ("proposed", "cdmo", "confirm", 409, ["accepted", "declined"]),
    ("accepted", "maker", "confirm", 200, None),
    ("accepted", "maker", "withdraw", 200, None),
    ("accepted", "operator", "confirm", 200, None),
    ("accepted", "cdmo", "accept", 409, []),
    ("accepted", "cdmo", "decline", 409, []),
    ("accepted", "cdmo", "confirm", 403, []),
    ("confirmed", "maker", "withdraw", 409, []),
    ("confirmed", "cdmo", "decline", 409, []),
    ("confirmed", "operator", "withdraw", 409, []),
    ("declined", "cdmo", "accept", 409, []),
    ("declined", "maker", "withdraw", 409, []),
    ("withdrawn", "cdmo", "accept", 409, []),
    ("withdrawn", "maker", "confirm", 409, []),
]


@pytest.mark.parametrize(("state", "who", "action", "status", "allowed"), CASES)
def test_every_lifecycle_move_and_its_refusal(
    api: Api, state: str, who: str, action: str, status: int, allowed: list[str] | None
) -> None:
    maker, cdmo, _site, listings, project = _market(api)
    proposal = api.propose(project["id"], _site["id"])
    _to_state(api, maker, cdmo, proposal["id"], state)
    caller = {"maker": maker, "cdmo": cdmo, "operator": api.operator}[who]
    before = ok(api.operator.get(f"/v1/proposals/{proposal['id']}"))
    response = _act(caller, proposal["id"], action)
    if status == 200:
        moved = ok(response)
        target = {
            "accept": "accepted",
            "decline": "declined",
            "confirm": "confirmed",
            "withdraw": "withdrawn",
        }[action]
        assert moved["status"] == target
        return
    problem = assert_problem(response, status, "invalid-state" if status == 409 else "forbidden")
    assert problem["current_state"] == state
    assert problem["allowed_moves"] == allowed
    assert ok(api.operator.get(f"/v1/proposals/{proposal['id']}")) == before  # unchanged


def test_patch_is_the_same_lifecycle_and_strangers_get_404(api: Api) -> None:
    maker, cdmo, site, _listings, project = _market(api)
    proposal = api.propose(project["id"], site["id"])
    url = f"/v1/proposals/{proposal['id']}"
    assert ok(cdmo.patch(url, json={"status": "accepted"}))["status"] == "accepted"
    assert ok(maker.patch(url, json={"status": "confirmed"}))["status"] == "confirmed"
    assert ok(maker.get(f"/v1/projects/{project['id']}"))["status"] == "matched"
    assert_problem(_act(api.cdmo(), proposal["id"], "accept"), 404, "not-found")
    assert_problem(_act(api.maker(), proposal["id"], "withdraw"), 404, "not-found")
    assert_problem(api.operator.post("/v1/proposals/prp_nope/accept"), 404, "not-found")
    assert_problem(cdmo.post(f"{url}/explode"), 404, "not-found")


def test_accepting_holds_the_rounded_share_and_only_confirm_keeps_it(api: Api) -> None:
    # Second source 0.35: the primary carries 0.65 of 101/33.3/0 h -> ceil: 66, 22, 0 h.
    maker, cdmo, site, listings, project = _market(
        api,
        second_source_required=True,
        second_source_share=0.35,
        loads=[{"process": "catheter_assembly", "monthly_hours": [101, 33.3, 0]}],
    )
    proposal = api.propose(project["id"], site["id"])
    accepted = ok(_act(cdmo, proposal["id"], "accept"))
    assert _reserved(api, listings) == [66, 22, 0]
    assert [(h["month"], h["hours"]) for h in accepted["held"]] == [
        ("2027-01", 66),
        ("2027-02", 22),
    ]
    assert accepted["expires_at"] is not None
    confirmed = ok(_act(maker, proposal["id"], "confirm"))
    assert _reserved(api, listings) == [66, 22, 0]  # a deal keeps its hours
    assert confirmed["expires_at"] is None and len(confirmed["held"]) == 2

    # withdraw (maker) and decline (CDMO) release exactly what was held
    other = api.project(
        maker, loads=[{"process": "catheter_assembly", "monthly_hours": [10, 10, 10]}]
    )
    p2 = api.propose(other["id"], site["id"])
    ok(_act(cdmo, p2["id"], "accept"))
    assert _reserved(api, listings) == [76, 32, 10]
    released = ok(_act(maker, p2["id"], "withdraw"))
    assert released["held"] == [] and _reserved(api, listings) == [66, 22, 0]
    p3 = api.propose(other["id"], site["id"])
    ok(_act(cdmo, p3["id"], "decline"))
    assert _reserved(api, listings) == [66, 22, 0]
    failed = {o.check.name: o.violations for o in run_checks(api.backend.db) if not o.ok}
    assert failed == {}


def test_a_shortfall_is_409_per_process_and_month_and_changes_nothing(api: Api) -> None:
    maker, cdmo, site, listings, project = _market(api, capacity=120)  # needs 100/120/140
    proposal = api.propose(project["id"], site["id"])
    version = api.market_version()
    problem = assert_problem(_act(cdmo, proposal["id"], "accept"), 409, "capacity-shortfall")
    assert problem["shortfalls"] == [
        {
            "process": "catheter_assembly",
            "month": "2027-03",
            "needed_hours": 140,
            "free_hours": 120,
            "short_hours": 20,
        }
    ]
    assert _reserved(api, listings) == [0, 0, 0]
    assert ok(cdmo.get(f"/v1/proposals/{proposal['id']}"))["status"] == "proposed"
    assert api.market_version() == version
    # no listing at all for a month counts as 0 h free
    gone = cdmo.delete(f"/v1/listings/{listings[0]['id']}", headers={"If-Match": '"1"'})
    assert gone.status_code == 204
    problem = assert_problem(_act(cdmo, proposal["id"], "accept"), 409, "capacity-shortfall")
    assert {(s["month"], s["free_hours"]) for s in problem["shortfalls"]} == {
        ("2027-01", 0),
        ("2027-03", 120),
    }


def test_capacity_and_reserved_hours_cannot_go_below_the_holds(api: Api) -> None:
    maker, cdmo, site, listings, project = _market(api, capacity=300)
    proposal = api.propose(project["id"], site["id"])
    ok(_act(cdmo, proposal["id"], "accept"))
    march = ok(cdmo.get(f"/v1/listings/{listings[2]['id']}"))
    url = f"/v1/listings/{march['id']}"
    etag = {"If-Match": f'"{march["version"]}"'}
    problem = assert_problem(
        cdmo.patch(url, json={"capacity_hours": 100}, headers=etag), 409, "capacity-held"
    )
    assert problem["reserved_hours"] == 140 and "140 h reserved" in problem["detail"]
    problem = assert_problem(
        cdmo.patch(url, json={"reserved_hours": 0}, headers=etag), 409, "capacity-held"
    )
    assert problem["held_hours"] == 140
    body = {"capacity_hours": 139, "reserved_hours": 139, "price_per_hour": 80}
    assert_problem(cdmo.put(url, json=body, headers=etag), 409, "capacity-held")
    assert_problem(cdmo.delete(url, headers=etag), 409, "capacity-held")
    assert ok(cdmo.patch(url, json={"capacity_hours": 140}, headers=etag))["free_hours"] == 0
    # closing the project withdraws the accepted proposal and releases its hours
    current = ok(maker.get(f"/v1/projects/{project['id']}"))
    ok(
        maker.patch(
            f"/v1/projects/{project['id']}",
            json={"status": "closed"},
            headers={"If-Match": f'"{current["version"]}"'},
        )
    )
    assert _reserved(api, listings) == [0, 0, 0]
    assert ok(cdmo.get(f"/v1/proposals/{proposal['id']}"))["status"] == "withdrawn"


def test_concurrent_accepts_and_withdrawals_never_over_reserve(api: Api) -> None:
    if api.backend.name != "services":
        pytest.skip("row locks under concurrency are PostgreSQL's (the services backend)")
    # 8 projects of 100 h/month at one site with 350 h/month: at most 3 can hold at once.
    maker, cdmo, site, listings, _ = _market(api, capacity=350)
    flat = [{"process": "catheter_assembly", "monthly_hours": [100, 100, 100]}]
    makers = [maker, api.maker()]
    proposals = []
    for i in range(8):
        project = api.project(makers[i % 2], loads=flat)
        proposals.append((makers[i % 2], api.propose(project["id"], site["id"])))
    barrier = threading.Barrier(12)
    results: dict[str, list[int]] = {"accept": [], "withdraw": []}
    lock = threading.Lock()

    def act(who: Tenant, pid: str, action: str) -> None:
        barrier.wait(timeout=30)
        status = _act(who, pid, action).status_code
        with lock:
            results[action].append(status)

    threads = [threading.Thread(target=act, args=(cdmo, p["id"], "accept")) for _, p in proposals]
    # makers withdraw four of them at the same moment
    threads += [
        threading.Thread(target=act, args=(m, p["id"], "withdraw")) for m, p in proposals[:4]
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(s in (200, 409) for s in results["accept"] + results["withdraw"]), results
    final = [ok(api.operator.get(f"/v1/proposals/{p['id']}")) for _, p in proposals]
    holding = [p for p in final if p["status"] == "accepted"]
    assert 1 <= len(holding) <= 3
    reserved = _reserved(api, listings)
    assert reserved == [100.0 * len(holding)] * 3  # exactly the live holds, nothing leaked
    assert all(r <= 350 for r in reserved)
    for p in final:
        assert (p["held"] != []) == (p["status"] == "accepted")
    failed = {o.check.name: o.violations for o in run_checks(api.backend.db) if not o.ok}
    assert failed == {}


def _backdate(api: Api, proposal_id: str, days: float) -> None:
    with api.backend.db.session() as session:
        session.execute(
            update(Proposal)
            .where(Proposal.id == proposal_id)  # type: ignore[arg-type]
            .values(updated_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=days))
        )
        session.commit()


def test_the_periodic_job_expires_proposals_not_acted_on_and_releases_holds(api: Api) -> None:
    maker, cdmo, site, listings, project = _market(api)
    flat = [{"process": "catheter_assembly", "monthly_hours": [50, 50, 50]}]
    other = api.project(maker, loads=flat)
    waiting = api.propose(project["id"], site["id"])
    accepted = api.propose(other["id"], site["id"])
    fresh_project = api.project(maker, loads=flat)
    fresh = api.propose(fresh_project["id"], site["id"])
    ok(_act(cdmo, accepted["id"], "accept"))
    assert _reserved(api, listings) == [50, 50, 50]
    ttl_days = api.backend.settings.deals.proposal_ttl_s / 86400
    _backdate(api, waiting["id"], ttl_days + 1)
    _backdate(api, accepted["id"], ttl_days + 1)

    settings = api.backend.settings.model_copy(
        update={
            "deals": api.backend.settings.deals.model_copy(update={"expiry_interval_s": 0.2}),
            "notifications": api.backend.settings.notifications.model_copy(
                update={"enabled": False}
            ),
        }
    )
    keeper = Housekeeper(api.backend.db, settings).start()
    try:
        deadline = threading.Event()
        for _ in range(100):  # at most ~10 s
            states = {
                ok(api.operator.get(f"/v1/proposals/{p['id']}"))["status"]
                for p in (waiting, accepted)
            }
            if states == {"expired"}:
                break
            deadline.wait(0.1)
    finally:
        keeper.stop()
    assert states == {"expired"}
    assert _reserved(api, listings) == [0, 0, 0]
    assert ok(api.operator.get(f"/v1/proposals/{fresh['id']}"))["status"] == "proposed"
    assert ok(maker.get(f"/v1/projects/{other['id']}"))["status"] == "open"
    problem = assert_problem(_act(cdmo, waiting["id"], "accept"), 409, "invalid-state")
    assert problem["current_state"] == "expired" and problem["allowed_moves"] == []
    # a sweep finds nothing more to do
    assert deals.expire_due(api.backend.db, ttl_s=api.backend.settings.deals.proposal_ttl_s) == 0


def test_the_next_runs_see_holds_declines_pins_and_forbids(api: Api) -> None:
    maker, cdmo, site, listings, project = _market(api)
    flat = [{"process": "catheter_assembly", "monthly_hours": [10, 10, 10]}]
    held = api.project(maker, loads=flat)
    declined = api.project(maker, loads=flat)
    other_site = api.site(cdmo, name="Other plant")
    ok(_act(cdmo, api.propose(held["id"], site["id"])["id"], "accept"))
    ok(_act(cdmo, api.propose(declined["id"], site["id"])["id"], "decline"))
    live = api.propose(project["id"], site["id"])
    rule = {"project_id": declined["id"], "site_id": other_site["id"], "rule": "pin"}
    ok(api.operator.post("/v1/pair-rules", json=rule), 201)
    forbid = {"project_id": project["id"], "site_id": other_site["id"], "rule": "forbid"}
    created = ok(api.operator.post("/v1/pair-rules", json=forbid), 201)
    assert created["rule"] == "forbid"
    assert_problem(maker.post("/v1/pair-rules", json=forbid), 403, "forbidden")
    bad = {**forbid, "site_id": "site_nope"}
    assert_problem(api.operator.post("/v1/pair-rules", json=bad), 422, "validation-error")
    assert len(ok(api.operator.get("/v1/pair-rules"))["items"]) == 2

    snap = ok(api.operator.get("/v1/market/snapshot"))
    ids = {p["id"] for p in snap["projects"]}
    assert held["id"] not in ids  # holds capacity: out of the market, counted once
    assert {project["id"], declined["id"]} <= ids
    march = next(
        x for x in snap["listings"] if x["site_id"] == site["id"] and x["month"] == "2027-03"
    )
    assert march["reserved_hours"] == 10  # its hours stay held as reserved
    assert {(p["project_id"], p["site_id"]) for p in snap["forbidden"]} == {
        (declined["id"], site["id"]),
        (project["id"], other_site["id"]),
    }
    assert snap["pinned"] == [
        {"project_id": declined["id"], "site_id": other_site["id"], "second_site_id": None}
    ]
    assert {(p["project_id"], p["site_id"]) for p in snap["previous"]} == {
        (project["id"], site["id"])
    }
    assert live["status"] == "proposed"
    assert api.operator.delete(f"/v1/pair-rules/{created['id']}").status_code == 204
    snap = ok(api.operator.get("/v1/market/snapshot"))
    assert {(p["project_id"], p["site_id"]) for p in snap["forbidden"]} == {
        (declined["id"], site["id"])
    }
