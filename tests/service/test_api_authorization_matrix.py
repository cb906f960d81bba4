"""The authorisation matrix: every route of the OpenAPI document x every role x own / other
tenant, against a rule table. A route without a rule fails the test, so a new route cannot
ship without deciding who may call it.

ALLOW means the call got past authorisation (any status but 401/403/404: a 409 for a state
conflict or 200 are both "allowed"); FORBID is 403 (the role may never do this); HIDE is 404
(the resource belongs to another tenant, so its existence does not leak). Every route answers
401 without a key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service_testkit import Api, Tenant, listing_body, ok, project_body, site_body

ALLOW, FORBID, HIDE = "allow", 403, 404
CALLERS = ("maker", "other maker", "cdmo", "other cdmo", "operator")

# (maker who owns the resources, another maker, the CDMO proposed to / owning the site,
#  another CDMO, the operator). The resources: project P of the maker, proposed to site S of
#  the CDMO (proposal X), listing L at S, the maker's organisation and a spare key of it.
RULES: dict[str, tuple[Any, Any, Any, Any, Any]] = {
    "POST /v1/projects": (ALLOW, FORBID, FORBID, FORBID, ALLOW),
    "GET /v1/projects": (ALLOW, ALLOW, ALLOW, ALLOW, ALLOW),
    "GET /v1/projects/{project_id}": (ALLOW, HIDE, ALLOW, HIDE, ALLOW),
    "PATCH /v1/projects/{project_id}": (ALLOW, HIDE, FORBID, FORBID, ALLOW),
    "DELETE /v1/projects/{project_id}": (ALLOW, HIDE, FORBID, FORBID, ALLOW),
    "GET /v1/projects/{project_id}/proposals": (ALLOW, HIDE, ALLOW, HIDE, ALLOW),
    "POST /v1/sites": (FORBID, FORBID, ALLOW, FORBID, ALLOW),
    "GET /v1/sites": (FORBID, FORBID, ALLOW, ALLOW, ALLOW),
    "GET /v1/sites/{site_id}": (FORBID, FORBID, ALLOW, HIDE, ALLOW),
    "PATCH /v1/sites/{site_id}": (FORBID, FORBID, ALLOW, HIDE, ALLOW),
    "DELETE /v1/sites/{site_id}": (FORBID, FORBID, ALLOW, HIDE, ALLOW),
    "GET /v1/sites/{site_id}/listings": (FORBID, FORBID, ALLOW, HIDE, ALLOW),
    "POST /v1/sites/{site_id}/listings": (FORBID, FORBID, ALLOW, HIDE, ALLOW),
    "GET /v1/listings": (FORBID, FORBID, ALLOW, ALLOW, ALLOW),
    "GET /v1/listings/{listing_id}": (FORBID, FORBID, ALLOW, HIDE, ALLOW),
    "PUT /v1/listings/{listing_id}": (FORBID, FORBID, ALLOW, HIDE, ALLOW),
    "PATCH /v1/listings/{listing_id}": (FORBID, FORBID, ALLOW, HIDE, ALLOW),
    "DELETE /v1/listings/{listing_id}": (FORBID, FORBID, ALLOW, HIDE, ALLOW),
    "POST /v1/proposals": (FORBID, FORBID, FORBID, FORBID, ALLOW),
    "GET /v1/proposals": (ALLOW, ALLOW, ALLOW, ALLOW, ALLOW),
    "GET /v1/proposals/{proposal_id}": (ALLOW, HIDE, ALLOW, HIDE, ALLOW),
    # The lifecycle (body: accepted): a maker sees the proposal but accepting is the CDMO's
    # move (403); confirm from proposed is a state conflict (409) for whoever sees it.
    "PATCH /v1/proposals/{proposal_id}": (FORBID, HIDE, ALLOW, HIDE, ALLOW),
    "POST /v1/proposals/{proposal_id}/accept": (FORBID, HIDE, ALLOW, HIDE, ALLOW),
    "POST /v1/proposals/{proposal_id}/decline": (FORBID, HIDE, ALLOW, HIDE, ALLOW),
    "POST /v1/proposals/{proposal_id}/confirm": (ALLOW, HIDE, ALLOW, HIDE, ALLOW),
    "POST /v1/proposals/{proposal_id}/withdraw": (ALLOW, HIDE, FORBID, HIDE, ALLOW),
    "POST /v1/pair-rules": (FORBID, FORBID, FORBID, FORBID, ALLOW),
    "GET /v1/pair-rules": (FORBID, FORBID, FORBID, FORBID, ALLOW),
    "DELETE /v1/pair-rules/{rule_id}": (FORBID, FORBID, FORBID, FORBID, ALLOW),
    # Every organisation has its own webhook and events feed.
    "PUT /v1/orgs/me/webhook": (ALLOW, ALLOW, ALLOW, ALLOW, ALLOW),
    "GET /v1/orgs/me/webhook": (ALLOW, ALLOW, ALLOW, ALLOW, ALLOW),
    "DELETE /v1/orgs/me/webhook": (ALLOW, ALLOW, ALLOW, ALLOW, ALLOW),
    "GET /v1/orgs/me/events": (ALLOW, ALLOW, ALLOW, ALLOW, ALLOW),
    "GET /v1/market/snapshot": (FORBID, FORBID, FORBID, FORBID, ALLOW),
    "GET /v1/market/version": (FORBID, FORBID, FORBID, FORBID, ALLOW),
    "POST /v1/orgs": (FORBID, FORBID, FORBID, FORBID, ALLOW),
    "GET /v1/orgs": (ALLOW, ALLOW, ALLOW, ALLOW, ALLOW),
    "GET /v1/orgs/me": (ALLOW, ALLOW, ALLOW, ALLOW, ALLOW),
    "GET /v1/orgs/{org_id}": (ALLOW, HIDE, HIDE, HIDE, ALLOW),
    "POST /v1/orgs/{org_id}/keys": (ALLOW, HIDE, HIDE, HIDE, ALLOW),
    "GET /v1/orgs/{org_id}/keys": (ALLOW, HIDE, HIDE, HIDE, ALLOW),
    "DELETE /v1/orgs/{org_id}/keys/{key_id}": (ALLOW, HIDE, HIDE, HIDE, ALLOW),
    "GET /v1/cdmos": (ALLOW, ALLOW, ALLOW, ALLOW, ALLOW),
    # Match runs: operators only; to everyone else they do not exist (403 on the POST).
    # Explanations: the project's to its maker (not to the CDMO it is proposed to), the
    # proposal's to the CDMO proposed to (the maker has the project's); run analytics to
    # operators. Without a committed run the allowed callers get 409, which is "allowed".
    "GET /v1/projects/{project_id}/explanation": (ALLOW, HIDE, HIDE, HIDE, ALLOW),
    # Instant candidates: a project's to its maker (not to a CDMO: who it competes with is not
    # its business), a draft's to its maker (as POST /v1/projects: for itself only) and operators.
    "GET /v1/projects/{project_id}/candidates": (ALLOW, HIDE, HIDE, HIDE, ALLOW),
    "POST /v1/candidates": (ALLOW, FORBID, FORBID, FORBID, ALLOW),
    "GET /v1/proposals/{proposal_id}/explanation": (HIDE, HIDE, ALLOW, HIDE, ALLOW),
    "GET /v1/match-runs/{run_id}/utilisation": (HIDE, HIDE, HIDE, HIDE, ALLOW),
    "GET /v1/match-runs/{run_id}/bottlenecks": (HIDE, HIDE, HIDE, HIDE, ALLOW),
    "POST /v1/match-runs": (FORBID, FORBID, FORBID, FORBID, ALLOW),
    "GET /v1/match-runs": (HIDE, HIDE, HIDE, HIDE, ALLOW),
    "GET /v1/match-runs/{run_id}": (HIDE, HIDE, HIDE, HIDE, ALLOW),
    "GET /v1/match-runs/{run_id}/events": (HIDE, HIDE, HIDE, HIDE, ALLOW),
    "GET /v1/match-runs/{run_id}/assignments": (HIDE, HIDE, HIDE, HIDE, ALLOW),
    "GET /v1/match-runs/{run_id}/placements-by-cdmo": (HIDE, HIDE, HIDE, HIDE, ALLOW),
    "GET /v1/match-runs/{run_id}/unassigned": (HIDE, HIDE, HIDE, HIDE, ALLOW),
    "POST /v1/match-runs/{run_id}/cancel": (HIDE, HIDE, HIDE, HIDE, ALLOW),
    "POST /v1/match-runs/{run_id}/replay": (HIDE, HIDE, HIDE, HIDE, ALLOW),
}


@dataclass
class World:
    callers: dict[str, Tenant]
    ids: dict[str, str]
    versions: dict[str, int]


def _world(api: Api) -> World:
    maker, other_maker, cdmo, other_cdmo = api.maker(), api.maker(), api.cdmo(), api.cdmo()
    site = api.site(cdmo)
    listing = api.listing(cdmo, site["id"])
    project = api.project(maker, status="open")
    proposal = api.propose(project["id"], site["id"])
    spare = ok(api.operator.post(f"/v1/orgs/{maker.id}/keys", json={"label": "spare"}), 201)
    forbid = {"project_id": project["id"], "site_id": site["id"], "rule": "forbid"}
    rule = ok(api.operator.post("/v1/pair-rules", json=forbid), 201)
    project = ok(maker.get(f"/v1/projects/{project['id']}"))
    # A finished run (cancelled while queued), so its event stream ends at once.
    run = ok(api.operator.post("/v1/match-runs", json={"params": {"time_limit_s": 1}}), 202)
    api.operator.post(f"/v1/match-runs/{run['id']}/cancel")
    return World(
        callers={
            "maker": maker,
            "other maker": other_maker,
            "cdmo": cdmo,
            "other cdmo": other_cdmo,
            "operator": api.operator,
        },
        ids={
            "project_id": project["id"],
            "site_id": site["id"],
            "listing_id": listing["id"],
            "proposal_id": proposal["id"],
            "org_id": maker.id,
            "key_id": spare["id"],
            "run_id": run["id"],
            "rule_id": rule["id"],
            "maker": maker.id,
            "cdmo": cdmo.id,
        },
        versions={"project": project["version"], "site": 1, "listing": listing["version"]},
    )


def _if_match(version: int) -> dict[str, str]:
    return {"If-Match": f'"{version}"'}


Request = tuple[dict[str, Any] | None, dict[str, str]]
BODIES: dict[str, Callable[[World], Request]] = {
    "POST /v1/projects": lambda w: (project_body(maker_id=w.ids["maker"]), {}),
    "POST /v1/candidates": lambda w: (project_body(maker_id=w.ids["maker"]), {}),
    "PATCH /v1/projects/{project_id}": lambda w: (
        {"priority": 3},
        _if_match(w.versions["project"]),
    ),
    "POST /v1/sites": lambda w: (site_body(cdmo_id=w.ids["cdmo"]), {}),
    "PATCH /v1/sites/{site_id}": lambda w: ({"name": "renamed"}, _if_match(w.versions["site"])),
    "POST /v1/sites/{site_id}/listings": lambda w: (listing_body(month="2028-02"), {}),
    "PUT /v1/listings/{listing_id}": lambda w: (
        {"capacity_hours": 500, "reserved_hours": 0, "price_per_hour": 50},
        _if_match(w.versions["listing"]),
    ),
    "PATCH /v1/listings/{listing_id}": lambda w: (
        {"capacity_hours": 700},
        _if_match(w.versions["listing"]),
    ),
    "POST /v1/proposals": lambda w: (
        {"project_id": w.ids["project_id"], "site_id": w.ids["site_id"], "role": "primary"},
        {},
    ),
    "PATCH /v1/proposals/{proposal_id}": lambda w: ({"status": "accepted"}, {}),
    "POST /v1/pair-rules": lambda w: (
        {"project_id": w.ids["project_id"], "site_id": w.ids["site_id"], "rule": "pin"},
        {},
    ),
    "PUT /v1/orgs/me/webhook": lambda w: ({"url": "http://127.0.0.1:9/hook"}, {}),
    "POST /v1/orgs": lambda w: ({"name": f"new org {w.ids['maker']}", "kind": "maker"}, {}),
    "POST /v1/orgs/{org_id}/keys": lambda w: ({"label": "k"}, {}),
    "POST /v1/match-runs": lambda w: ({"params": {"time_limit_s": 1}}, {}),
}


def _routes(api: Api) -> set[str]:
    doc = api.client.get("/openapi.json").json()
    return {
        f"{method.upper()} {path}"
        for path, item in doc["paths"].items()
        if path.startswith("/v1/")
        for method in item
    }


def test_every_route_has_a_rule_and_every_rule_a_route(api: Api) -> None:
    routes = _routes(api)
    assert not routes - RULES.keys(), (
        f"routes without an authorisation rule: {routes - RULES.keys()}"
    )
    assert not RULES.keys() - routes, f"rules for routes that do not exist: {RULES.keys() - routes}"


def test_the_authorisation_matrix(api: Api) -> None:
    mismatches = []
    shared = _world(api)
    for route in sorted(RULES):
        method, template = route.split(" ", 1)
        world = shared if method == "GET" else _world(api)
        for caller, expected in zip(CALLERS, RULES[route], strict=True):
            path = template.format(**world.ids)
            body, headers = BODIES.get(route, lambda w: (None, {}))(world)
            kw: dict[str, Any] = {"headers": headers}
            if body is not None:
                kw["json"] = body
            status = world.callers[caller].request(method, path, **kw).status_code
            allowed = status not in (401, 403, 404) and status < 500
            if allowed and method != "GET":
                world = _world(api)  # the call may have changed it: the next caller gets a new one
            if (expected == ALLOW and not allowed) or (expected != ALLOW and status != expected):
                mismatches.append(f"{route} as {caller}: expected {expected}, got {status}")
        anonymous = api.client.request(method, template.format(**shared.ids)).status_code
        if anonymous != 401:
            mismatches.append(f"{route} without a key: expected 401, got {anonymous}")
    assert not mismatches, "\n".join(mismatches)
