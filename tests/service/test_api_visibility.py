"""The visibility matrix: every role against every other tenant's resources.

404 (never 403) for a resource of another tenant, so its existence does not leak; 403 only
where the caller's role can never do the operation, whatever the id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from service_testkit import Api, Tenant, ok, project_body


@dataclass
class World:
    operator: Tenant
    maker_a: Tenant
    maker_b: Tenant
    cdmo_a: Tenant
    cdmo_b: Tenant
    project: dict[str, Any]  # maker A's
    site: dict[str, Any]  # CDMO A's
    listing: dict[str, Any]  # on CDMO A's site

    def ids(self) -> dict[str, str]:
        return {
            "project": self.project["id"],
            "site": self.site["id"],
            "listing": self.listing["id"],
            "maker_a": self.maker_a.id,
            "cdmo_a": self.cdmo_a.id,
        }


@pytest.fixture
def world(api: Api) -> World:
    maker_a, maker_b, cdmo_a, cdmo_b = api.maker(), api.maker(), api.cdmo(), api.cdmo()
    site = api.site(cdmo_a)
    return World(
        operator=api.operator,
        maker_a=maker_a,
        maker_b=maker_b,
        cdmo_a=cdmo_a,
        cdmo_b=cdmo_b,
        project=api.project(maker_a),
        site=site,
        listing=api.listing(cdmo_a, site["id"]),
    )


LISTING_VALUES = {"capacity_hours": 1, "reserved_hours": 0, "price_per_hour": 1}

# (method, path, body). Writes carry If-Match "1", so a caller that gets past visibility
# would succeed: a 404 below really is the visibility check.
PROJECT_OPS = [
    ("GET", "/v1/projects/{project}", None),
    ("PATCH", "/v1/projects/{project}", {"priority": 2}),
    ("DELETE", "/v1/projects/{project}", None),
    ("GET", "/v1/projects/{project}/proposals", None),
]
SITE_OPS = [
    ("GET", "/v1/sites/{site}", None),
    ("PATCH", "/v1/sites/{site}", {"name": "x"}),
    ("DELETE", "/v1/sites/{site}", None),
    ("GET", "/v1/sites/{site}/listings", None),
    (
        "POST",
        "/v1/sites/{site}/listings",
        {"process": "final_test", "month": "2030-01", "capacity_hours": 1, "price_per_hour": 1},
    ),
    ("GET", "/v1/listings/{listing}", None),
    ("PUT", "/v1/listings/{listing}", LISTING_VALUES),
    ("PATCH", "/v1/listings/{listing}", {"capacity_hours": 2}),
    ("DELETE", "/v1/listings/{listing}", None),
]
ORG_OPS = [
    ("GET", "/v1/orgs/{maker_a}", None),
    ("GET", "/v1/orgs/{maker_a}/keys", None),
    ("POST", "/v1/orgs/{maker_a}/keys", {"label": "stolen"}),
    ("GET", "/v1/orgs/{cdmo_a}", None),
    ("POST", "/v1/orgs/{cdmo_a}/keys", {"label": "stolen"}),
]


def _call(who: Tenant, op: tuple[str, str, Any], ids: dict[str, str]) -> int:
    method, path, body = op
    kwargs: dict[str, Any] = {"headers": {"If-Match": '"1"'}}
    if body is not None:
        kwargs["json"] = body
    response = who.request(method, path.format(**ids), **kwargs)
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json")
    return response.status_code


def _check(world: World, who: Tenant, ops: list, expected: int) -> None:
    got = {f"{m} {p}": _call(who, (m, p, b), world.ids()) for m, p, b in ops}
    wrong = {op: status for op, status in got.items() if status != expected}
    assert not wrong, f"{who.kind} {who.name}: expected {expected}, got {wrong}"


def test_other_maker_sees_nothing_of_a_project(world: World) -> None:
    _check(world, world.maker_b, PROJECT_OPS, 404)


def test_cdmo_without_a_proposal_sees_nothing_of_a_project(world: World) -> None:
    _check(world, world.cdmo_a, PROJECT_OPS[:1] + PROJECT_OPS[3:], 404)
    _check(world, world.cdmo_b, PROJECT_OPS[:1] + PROJECT_OPS[3:], 404)
    # writing projects is never a CDMO's business: role-wide 403, whatever the id
    _check(world, world.cdmo_b, PROJECT_OPS[1:3], 403)


def test_other_cdmo_sees_nothing_of_a_site_or_its_listings(world: World) -> None:
    _check(world, world.cdmo_b, SITE_OPS, 404)


def test_makers_never_touch_sites_or_listings(world: World) -> None:
    _check(world, world.maker_a, SITE_OPS, 403)
    _check(world, world.maker_b, SITE_OPS, 403)


def test_tenants_see_nothing_of_other_organisations(world: World) -> None:
    for who in (world.maker_b, world.cdmo_b):
        _check(world, who, ORG_OPS, 404)
    # and the key stays theirs: no key was created by the attempts above
    keys = ok(world.operator.get(f"/v1/orgs/{world.maker_a.id}/keys"))["items"]
    assert [k["label"] for k in keys] == ["t"]


def test_owners_and_operators_can_read_everything(world: World) -> None:
    ids = world.ids()
    for who in (world.maker_a, world.operator):
        assert _call(who, ("GET", "/v1/projects/{project}", None), ids) == 200
    for who in (world.cdmo_a, world.operator):
        for op in (("GET", "/v1/sites/{site}", None), ("GET", "/v1/listings/{listing}", None)):
            assert _call(who, op, ids) == 200
    assert _call(world.maker_a, ("GET", "/v1/orgs/{maker_a}", None), ids) == 200


def test_operator_only_endpoints(world: World) -> None:
    ids = world.ids()
    ops = [
        ("GET", "/v1/market/snapshot", None),
        ("GET", "/v1/market/version", None),
        ("POST", "/v1/orgs", {"name": "Intruder", "kind": "operator"}),
        ("POST", "/v1/proposals", {"project_id": ids["project"], "site_id": ids["site"]}),
    ]
    for who in (world.maker_a, world.cdmo_a):
        _check(world, who, ops, 403)
    assert _call(world.operator, ops[0], ids) == 200


def test_collections_only_hold_the_callers_rows(world: World, api: Api) -> None:
    other_project = api.project(world.maker_b)
    other_site = api.site(world.cdmo_b)

    def ids(who: Tenant, path: str) -> set[str]:
        return {x["id"] for x in ok(who.get(path))["items"]}

    assert ids(world.maker_a, "/v1/projects") == {world.project["id"]}
    assert ids(world.maker_b, "/v1/projects") == {other_project["id"]}
    assert ids(world.cdmo_a, "/v1/projects") == set()
    assert ids(world.cdmo_a, "/v1/sites") == {world.site["id"]}
    assert ids(world.cdmo_b, "/v1/sites") == {other_site["id"]}
    assert ids(world.cdmo_b, "/v1/listings") == set()
    assert ids(world.cdmo_b, f"/v1/listings?site_id={world.site['id']}") == set()
    assert ids(world.maker_b, "/v1/orgs") == {world.maker_b.id}
    assert ids(world.operator, "/v1/projects") == {world.project["id"], other_project["id"]}
    # filters cannot widen visibility
    assert ids(world.maker_b, f"/v1/projects?maker_id={world.maker_a.id}") == set()
    assert ids(world.cdmo_b, f"/v1/sites?cdmo_id={world.cdmo_a.id}") == set()


def test_a_cdmo_sees_a_project_once_proposed_redacted(world: World, api: Api) -> None:
    ids = world.ids()
    api.propose(world.project["id"], world.site["id"])
    seen = ok(world.cdmo_a.get(f"/v1/projects/{ids['project']}"))
    assert seen["view"] == "redacted" and seen["status"] == "proposed"
    assert seen["loads"] == world.project["loads"]
    for secret in ("budget_ceiling", "excluded_cdmo_ids", "priority"):
        assert secret not in seen
    assert seen["title"] is None and seen["maker_id"] is None  # confidential by default
    assert {p["id"] for p in ok(world.cdmo_a.get("/v1/projects"))["items"]} == {ids["project"]}
    # still no writes, and the other CDMO still sees nothing
    _check(world, world.cdmo_a, PROJECT_OPS[1:3], 403)
    _check(world, world.cdmo_b, PROJECT_OPS[:1] + PROJECT_OPS[3:], 404)
    # the maker still gets the full view
    assert ok(world.maker_a.get(f"/v1/projects/{ids['project']}"))["view"] == "full"


def test_a_non_confidential_project_shows_title_and_maker(world: World, api: Api) -> None:
    public = ok(
        world.maker_a.post("/v1/projects", json=project_body(confidential=False, title="Open IVD")),
        201,
    )
    api.propose(public["id"], world.site["id"])
    seen = ok(world.cdmo_a.get(f"/v1/projects/{public['id']}"))
    assert seen["title"] == "Open IVD" and seen["maker_id"] == world.maker_a.id
    assert "budget_ceiling" not in seen
