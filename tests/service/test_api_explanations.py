"""Explanations and run analytics through HTTP, on both backends: a placed project (value in
parts summing to the run's value, next best sites), an unplaced one (the binding rule with
figures), the CDMO's view of its proposal without the maker's confidential fields, run
utilisation and bottlenecks, visibility and bad input."""

from __future__ import annotations

from typing import Any

import pytest
from runs_testkit import wait_run
from service_testkit import Api, Tenant, assert_problem, ok

from service.flows.match_run import RunContext, execute

BUDGET = 987654.0  # distinctive: must never reach a CDMO
PRIORITY = 9
TITLE = "Secret balloon catheter"

CERT = {
    "kind": "iso_13485",
    "device_classes": ["II", "III"],
    "valid_from": "2025-01-01",
    "valid_until": "2029-12-31",
}


def _site(api: Api, cdmo: Tenant, name: str, on_time: float, capacity: float) -> str:
    site = api.site(cdmo, name=name, certifications=[CERT], quality={"on_time_rate": on_time})
    for month in ("2027-01", "2027-02", "2027-03"):
        api.listing(
            cdmo,
            site["id"],
            month=month,
            capacity_hours=capacity,
            reserved_hours=0,
            price_per_hour=80,
        )
    return str(site["id"])


class Market:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.maker = api.maker()
        self.cdmo_a, self.cdmo_b, self.rival = api.cdmo(), api.cdmo(), api.cdmo()
        self.good = _site(api, self.cdmo_a, "Good plant", 0.99, 200)
        self.small = _site(api, self.cdmo_b, "Small plant", 0.6, 100)
        self.rival_site = _site(api, self.rival, "Rival plant", 1.0, 500)
        secret = {
            "title": TITLE,
            "priority": PRIORITY,
            "budget_ceiling": BUDGET,
            "excluded_cdmo_ids": [self.rival.id],
            "confidential": True,
            "target_markets": ["CN"],
        }
        self.placed = api.project(self.maker, **secret)["id"]
        # The placed project (100, 120, 140 h) fits the good site only (the small one has
        # 100 h a month, the rival is excluded); the crowded one (100, 190, 100 h) too, and
        # both together do not: the higher priority takes the good site.
        self.crowded = api.project(
            self.maker,
            priority=2,
            target_markets=["CN"],
            excluded_cdmo_ids=[self.rival.id],
            loads=[{"process": "catheter_assembly", "monthly_hours": [100, 190, 100]}],
        )["id"]
        self.no_cert = api.project(
            self.maker,
            required_certifications=["iso_13485", "fda_registration"],
            target_markets=["US"],
        )["id"]
        self.run_id = run_match(api)


def run_match(api: Api) -> str:
    op = api.operator
    body = {"params": {"time_limit_s": 2, "deterministic": True, "workers": 1}}
    run = ok(op.post("/v1/match-runs", json=body), 202)
    backend = api.backend
    ctx = RunContext(backend.services.db, backend.services.events, backend.settings.runs)
    execute(ctx, run["id"])  # here, or already by the embedded pool: claims are exclusive
    key = type("K", (), {"headers": {"Authorization": f"Bearer {op.key}"}})()
    final = wait_run(api.client, key, run["id"], {"succeeded", "failed", "cancelled"}, 120)
    assert final["status"] == "succeeded", final
    return str(run["id"])


@pytest.fixture
def market(api: Api) -> Market:
    return Market(api)


def _parts_sum(b: dict[str, Any]) -> float:
    return sum(b[k] for k in ("priority", "quality", "market", "cost", "stability", "rounding"))


def test_placed_project_why_here_parts_sum_to_the_runs_value(market: Market) -> None:
    m, op = market, market.api.operator
    body = ok(m.maker.get(f"/v1/projects/{m.placed}/explanation"))
    assert body["placed"] is True, (body["unplaced"], body["stored_reason"])
    assert body["run"]["run_id"] == m.run_id
    (placement,) = body["placements"]
    assert placement["site_id"] == m.good and placement["outcome"] == "proposed"
    b = placement["breakdown"]
    assert b["priority"] == pytest.approx(1000.0 * PRIORITY)
    assert b["quality"] > 0 and b["cost"] < 0
    assigned = ok(op.get(f"/v1/match-runs/{m.run_id}/assignments"))["items"]
    run_value = next(a["value"] for a in assigned if a["project_id"] == m.placed)
    assert b["value"] == run_value
    assert _parts_sum(b) == pytest.approx(run_value, abs=1e-6)
    # Next best: the rival's site would be worth more but its CDMO is excluded; the small
    # site is worth less and too small even when empty (not listed).
    (alt,) = placement["alternatives"]
    assert alt["site_id"] == m.rival_site and alt["lacks"] == "excluded"
    assert alt["eligible"] is False and alt["value_given_up"] < 0
    assert alt["value_given_up"] == b["value"] - alt["value"]
    assert "excluded" in alt["detail"]
    # Every placement of the run: the explanation's parts sum to the run's value.
    for a in assigned:
        exp = ok(op.get(f"/v1/projects/{a['project_id']}/explanation"))
        (p,) = [x for x in exp["placements"] if x["role"] == a["role"]]
        assert p["breakdown"]["value"] == a["value"]
        assert _parts_sum(p["breakdown"]) == pytest.approx(a["value"], abs=1e-6)
        assert p["cost"] == pytest.approx(a["cost"])


def test_unplaced_projects_get_the_binding_rule_with_figures(market: Market) -> None:
    m = market
    body = ok(m.maker.get(f"/v1/projects/{m.no_cert}/explanation"))
    assert body["placed"] is False and body["stored_reason"] is not None
    why = body["unplaced"]
    assert why["reason"] == "certification"
    fda = next(c for c in why["certifications"] if c["requirement"] == "fda_registration")
    assert fda["sites"] == 0 and "0 hold fda_registration" in why["detail"]
    assert why["funnel"][0]["rule"] == "category_or_class" and why["total_sites"] == 3
    crowded = ok(m.maker.get(f"/v1/projects/{m.crowded}/explanation"))
    assert crowded["placed"] is False and crowded["stored_reason"] == "capacity"
    w = crowded["unplaced"]
    assert w["reason"] == "capacity" and w["capacity_sites"] == 2
    # 2027-02: the good site has 200 - 120 = 80 h left (110 short), the small one 100 h
    # (90 short); 2027-03: the good site has 60 h left (40 short).
    gaps = [(g["month"], g["sites_short"], g["short_hours"]) for g in w["capacity_gaps"]]
    assert gaps == [("2027-02", 2, 200), ("2027-03", 1, 40)]
    assert "all 2 are full" in w["detail"] and "by 200 h in total" in w["detail"]
    shortfalls = {(x["site_id"], x["month"]): x["short_hours"] for x in w["shortfalls"]}
    assert shortfalls == {
        (m.good, "2027-02"): 110,
        (m.good, "2027-03"): 40,
        (m.small, "2027-02"): 90,
    }


def test_proposal_explanation_hides_the_makers_confidential_fields(market: Market) -> None:
    m, op = market, market.api.operator
    proposals = ok(op.get(f"/v1/proposals?project_id={m.placed}"))["items"]
    (proposal,) = proposals
    assert proposal["site_id"] == m.good and proposal["batch_id"] == m.run_id
    response = m.cdmo_a.get(f"/v1/proposals/{proposal['id']}/explanation")
    body = ok(response)
    assert body["site_id"] == m.good and body["rank"] >= 1
    assert body["site"]["on_time_rate"] == pytest.approx(0.99)
    text = response.text
    for secret in (
        TITLE,
        m.maker.id,
        m.rival.id,
        "987654",
        "budget",
        "priority",
        "excluded",
        str(int(1000 * PRIORITY)),
        '"breakdown"',
        '"value"',
    ):
        assert secret not in text, secret
    # Operators see it too; another CDMO, and the maker, do not.
    ok(op.get(f"/v1/proposals/{proposal['id']}/explanation"))
    assert_problem(m.cdmo_b.get(f"/v1/proposals/{proposal['id']}/explanation"), 404, "not-found")
    assert_problem(m.maker.get(f"/v1/proposals/{proposal['id']}/explanation"), 404, "not-found")
    # The CDMO proposed to may see the project, but not the maker's explanation of it.
    assert_problem(m.cdmo_a.get(f"/v1/projects/{m.placed}/explanation"), 404, "not-found")
    assert_problem(m.api.maker().get(f"/v1/projects/{m.placed}/explanation"), 404, "not-found")


def _stored_kinds(api: Api, run_id: str) -> dict[str, set[str]]:
    from sqlmodel import select

    from service.models import RunExplanation

    with api.backend.db.session(write=False) as session:
        rows = session.exec(
            select(RunExplanation.kind, RunExplanation.subject_id).where(
                RunExplanation.run_id == run_id
            )
        ).all()
    out: dict[str, set[str]] = {}
    for kind, subject in rows:
        out.setdefault(kind, set()).add(subject)
    return out


def test_explanations_are_computed_by_the_worker_and_read_by_the_api(
    market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from service.flows import explanations as flow
    from service.models import MatchRun

    m, op = market, market.api.operator
    (proposal,) = ok(op.get(f"/v1/proposals?project_id={m.placed}"))["items"]
    for _ in range(200):  # the job stores them right after the commit (bounded wait)
        stored = _stored_kinds(m.api, m.run_id)
        if proposal["id"] in stored.get("proposal", set()):
            break
        time.sleep(0.1)
    assert {m.placed, m.crowded, m.no_cert} <= stored["project"]
    assert proposal["id"] in stored["proposal"]
    # Recomputed from the snapshot, as before the worker stored them: the same bodies.
    with m.api.backend.db.session(write=False) as session:
        run = session.get(MatchRun, m.run_id)
        assert run is not None
        loaded = flow._load(session, run)
        fresh = {
            p: flow._project_explanation(session, run, loaded, p).model_dump(mode="json")
            for p in (m.placed, m.crowded, m.no_cert)
        }

    # The API process no longer touches the matcher for them: a read of the stored rows.
    def no_matcher(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("the API computed an explanation")

    monkeypatch.setattr(flow, "_load", no_matcher)
    for project_id, body in fresh.items():
        assert ok(m.maker.get(f"/v1/projects/{project_id}/explanation")) == body
    placed = fresh[m.placed]["placements"][0]["breakdown"]
    assert _parts_sum(placed) == pytest.approx(placed["value"], abs=1e-6)
    assert ok(m.cdmo_a.get(f"/v1/proposals/{proposal['id']}/explanation"))["rank"] >= 1


def test_run_utilisation_and_bottlenecks(market: Market) -> None:
    m, op = market, market.api.operator
    body = ok(op.get(f"/v1/match-runs/{m.run_id}/utilisation?limit=200"))
    assert len(body["items"]) == 9 and body["next_cursor"] is None
    assigned = ok(op.get(f"/v1/match-runs/{m.run_id}/assignments"))["items"]
    good_jan = next(c for c in body["items"] if c["site_id"] == m.good and c["month"] == "2027-01")
    placed_here = [a for a in assigned if a["site_id"] == m.good]
    assert good_jan["used_hours"] == 100 * len(placed_here)
    assert good_jan["free_hours"] == 200 - good_jan["used_hours"]
    for t in body["totals"]:
        cells = [c for c in body["items"] if c["month"] == t["month"]]
        assert t["used_hours"] == sum(c["used_hours"] for c in cells)
    page1 = ok(op.get(f"/v1/match-runs/{m.run_id}/utilisation?limit=4"))
    page2 = ok(
        op.get(f"/v1/match-runs/{m.run_id}/utilisation?limit=4&cursor={page1['next_cursor']}")
    )
    assert page1["items"] + page2["items"] == body["items"][:8]
    only = ok(op.get(f"/v1/match-runs/{m.run_id}/utilisation?site_id={m.small}&month_from=2027-02"))
    assert {(c["site_id"], c["month"]) for c in only["items"]} == {
        (m.small, "2027-02"),
        (m.small, "2027-03"),
    }

    neck = ok(op.get(f"/v1/match-runs/{m.run_id}/bottlenecks"))
    unplaced = ok(op.get(f"/v1/match-runs/{m.run_id}/unassigned"))["items"]
    assert neck["unplaced_projects"] == len(unplaced) == 2
    assert neck["capacity"] == [
        {"process": "catheter_assembly", "month": "2027-02", "projects": 1, "short_hours": 200}
    ]
    assert {d["key"]: d["projects"] for d in neck["by_reason"]} == {
        "capacity": 1,
        "certification": 1,
    }
    assert neck["unmet_hours"] == 360 + 390
    assert {"key": "fda_registration", "projects": 1, "hours": 360.0} in neck["certifications"]
    assert sum(d["projects"] for d in neck["by_reason"]) == len(unplaced)
    assert any(d["key"] == "US" for d in neck["by_market"])
    for who in (m.maker, m.cdmo_a):
        for path in ("utilisation", "bottlenecks"):
            assert_problem(who.get(f"/v1/match-runs/{m.run_id}/{path}"), 404, "not-found")


def test_no_committed_run_and_bad_input(api: Api) -> None:
    maker = api.maker()
    pid = api.project(maker)["id"]
    problem = assert_problem(maker.get(f"/v1/projects/{pid}/explanation"), 409, "invalid-state")
    assert "no committed match run" in problem["detail"]
    op = api.operator
    assert_problem(op.get("/v1/projects/bad%20id/explanation"), 422, "validation-error")
    assert_problem(op.get("/v1/projects/prj_missing/explanation"), 404, "not-found")
    assert_problem(op.get("/v1/match-runs/run_missing/utilisation"), 404, "not-found")
    assert_problem(op.get("/v1/match-runs/run_missing/bottlenecks"), 404, "not-found")
    # A proposal an operator made by hand has no run to explain it from.
    cdmo = api.cdmo()
    site = api.site(cdmo)
    proposal = api.propose(pid, site["id"])
    assert_problem(op.get(f"/v1/proposals/{proposal['id']}/explanation"), 409, "invalid-state")


def test_run_analytics_bad_input_and_a_run_without_an_answer(api: Api) -> None:
    from schemas.api import RunCreate
    from service import repositories as repo

    op = api.operator
    with api.backend.db.session() as session:  # queued, never executed: no answer yet
        run = repo.runs.create_run(session=session, run_in=RunCreate(), created_by=op.id)
        session.commit()
        run_id = run.id
    # Cancelled at once (queued): it never runs later behind another test's back.
    assert ok(op.post(f"/v1/match-runs/{run_id}/cancel"), 202)["status"] == "cancelled"
    for path in ("utilisation", "bottlenecks"):
        body = assert_problem(op.get(f"/v1/match-runs/{run_id}/{path}"), 409, "invalid-state")
        assert "no answer yet" in body["detail"]
    base = f"/v1/match-runs/{run_id}/utilisation"
    for query in (
        "month_from=2027-03&month_to=2027-01",
        "month_from=2027-13",
        "process=welding",
        "site_id=bad%20id",
        "cursor=not-a-cursor",
        "limit=0",
    ):
        assert_problem(op.get(f"{base}?{query}"), 422, "validation-error")
