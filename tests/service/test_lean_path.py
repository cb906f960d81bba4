"""The lean path (service.hotpath) answers exactly as the usual path does.

Every request is sent to two app instances on the same PostgreSQL and Redis: the test's
app (lean path on, the default with PostgreSQL) and a second one with ``CDMO_HTTP__LEAN_PATH``
off (every request through routing, dependencies and the middleware stack). Their status,
the headers that matter and the body must be equal, byte for byte; and the lean app must
have answered the request itself where it should (its raw connection sent the statement),
or handed it over where it should not (it sent nothing).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from service_testkit import Api, Backend, Tenant, ok, open_backend, project_body

from service.app import create_app
from service.config import RateLimitSettings, Settings
from service.pagination import encode_cursor
from service.runtime import Services, build_services

# compared exactly; Retry-After and RateLimit-Reset (seconds left in the window: the two
# requests may fall either side of a second) and RateLimit-Remaining (each instance's own
# count) only for their presence
SAME = ("content-type", "etag", "x-request-id", "location", "ratelimit-limit")
PRESENT = ("retry-after", "ratelimit-remaining", "ratelimit-reset", "content-length")


def _lean_off(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"http": settings.http.model_copy(update={"lean_path": False})}
    )


@pytest.fixture(scope="module")
def usual(backend: Backend) -> Iterator[TestClient]:
    """A second app instance on the same database and Redis, lean path off."""
    if backend.name != "services":
        pytest.skip("the lean path is PostgreSQL's")
    settings = _lean_off(backend.settings)
    services = build_services(settings)
    with TestClient(create_app(settings, services)) as client:
        yield client


class Sent:
    """Statements the lean app's raw connections sent (service.db.RawReads.listeners)."""

    def __init__(self, services: Services) -> None:
        assert services.db.raw is not None
        self.raw = services.db.raw
        self.statements: list[str] = []

    def __enter__(self) -> Sent:
        self.raw.listeners.append(self.statements.append)
        return self

    def __exit__(self, *exc: object) -> None:
        self.raw.listeners.remove(self.statements.append)


def _same(lean: httpx.Response, usual: httpx.Response) -> None:
    assert (lean.status_code, lean.content) == (usual.status_code, usual.content)
    for name in SAME:
        assert lean.headers.get(name) == usual.headers.get(name), name
    for name in PRESENT:
        assert (name in lean.headers) == (name in usual.headers), name
    assert "x-request-id" in lean.headers


def compare(
    services: Services,
    lean: TestClient,
    usual: TestClient,
    path: str,
    key: str | None,
    *,
    served: bool,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    content: str | bytes | None = None,
    usual_path: str | None = None,
    normalise: Any = None,
) -> httpx.Response:
    """Send the request to both apps and check they answer alike; ``served``: the lean path
    sent its statement (it answered, or handed over what its statement did not write).
    ``usual_path``: a twin resource for the usual app (a write changes what it writes to),
    whose answer equals after ``normalise``."""
    headers = {"X-Request-ID": f"req-{uuid.uuid4().hex}", **(headers or {})}
    if content is not None:
        headers.setdefault("Content-Type", "application/json")
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    with Sent(services) as sent:
        first = lean.request(method, path, headers=headers, content=content)
    second = usual.request(method, usual_path or path, headers=headers, content=content)
    if normalise is None:
        _same(first, second)
    else:
        assert first.status_code == second.status_code, (first.text, second.text)
        assert normalise(first.json()) == normalise(second.json())
    assert bool(sent.statements) == served, (path, sent.statements)
    return first


def _warm(tenant: Tenant, usual: TestClient) -> None:
    """The key in both apps' caches (the lean path serves only cached keys)."""
    ok(tenant.get("/v1/orgs/me"))
    ok(usual.get("/v1/orgs/me", headers={"Authorization": f"Bearer {tenant.key}"}))


def test_a_project_read_is_answered_alike_for_every_caller(
    api: Api, backend: Backend, usual: TestClient
) -> None:
    maker, other, cdmo, stranger = api.maker(), api.maker(), api.cdmo(), api.cdmo()
    full = api.project(maker)
    nulls = api.project(maker, budget_ceiling=None, required_certifications=[])
    public = api.project(maker, confidential=False)
    site = api.site(cdmo)
    for project in (full, public):
        api.propose(project["id"], site["id"])
    for tenant in (maker, other, cdmo, stranger, api.operator):
        _warm(tenant, usual)
    services, lean = backend.services, backend.client

    def check(tenant: Tenant, project_id: str, *, served: bool, **kw: Any) -> httpx.Response:
        path = f"/v1/projects/{project_id}"
        return compare(services, lean, usual, path, tenant.key, served=served, **kw)

    for project in (full, nulls, public):
        answer = check(maker, project["id"], served=True)
        assert answer.status_code == 200 and answer.json()["view"] == "full"
        assert answer.headers["etag"] == f'"{answer.json()["version"]}"'
        check(api.operator, project["id"], served=True)
    assert check(maker, nulls["id"], served=True).json()["budget_ceiling"] is None
    # a CDMO sees a proposed project redacted: title and maker hidden while confidential
    hidden = check(cdmo, full["id"], served=True).json()
    assert hidden["view"] == "redacted" and hidden["title"] is None
    shown = check(cdmo, public["id"], served=True).json()
    assert shown["title"] == public["title"] and shown["maker_id"] == maker.id
    # not visible: 404 from the usual path (the lean path's read found nothing, handed over)
    assert check(other, full["id"], served=True).status_code == 404
    assert check(stranger, full["id"], served=True).status_code == 404
    assert check(cdmo, nulls["id"], served=True).status_code == 404
    assert check(maker, "prj_nope", served=True).status_code == 404
    # without a request id, each instance makes one; the client's comes back; an
    # If-None-Match (even a bad one) changes nothing
    auth = {"Authorization": f"Bearer {maker.key}"}
    made = lean.get(f"/v1/projects/{full['id']}", headers=auth)
    assert made.status_code == 200 and len(made.headers["x-request-id"]) == 32
    given = check(maker, full["id"], served=True, headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    check(maker, full["id"], served=True, headers={"If-None-Match": '"nope", W/"x"'})
    # shapes the lean path hands over untouched
    for project_id in ("a b", "x" * 65, "abc%0A", "abc%0a", "%00"):
        assert check(maker, project_id, served=False).status_code == 422, project_id
    check(maker, f"{full['id']}?fields=all", served=False)
    # a trailing slash: the usual path redirects, the lean path serves the redirected read
    check(maker, f"{full['id']}/", served=True)


def test_a_list_of_projects_is_answered_alike_page_by_page(
    api: Api, backend: Backend, usual: TestClient
) -> None:
    maker, other, cdmo = api.maker(), api.maker(), api.cdmo()
    mine = [api.project(maker, budget_ceiling=None if i % 2 else 1000 * (i + 1)) for i in range(5)]
    theirs = api.project(other)
    site = api.site(cdmo)
    api.propose(mine[0]["id"], site["id"])
    for tenant in (maker, other, cdmo, api.operator):
        _warm(tenant, usual)
    services, lean = backend.services, backend.client

    def check(tenant: Tenant, query: str, *, served: bool) -> httpx.Response:
        path = f"/v1/projects{query}"
        return compare(services, lean, usual, path, tenant.key, served=served)

    # every page of the maker's projects, two at a time, through the cursors
    seen, query = [], "?limit=2"
    while True:
        page = check(maker, query, served=True).json()
        seen += [p["id"] for p in page["items"]]
        if page["next_cursor"] is None:
            break
        query = f"?limit=2&cursor={page['next_cursor']}"
    assert seen == sorted(p["id"] for p in mine)
    assert len(check(maker, "", served=True).json()["items"]) == 5
    assert len(check(api.operator, "?limit=200", served=True).json()["items"]) == 6
    assert [p["view"] for p in check(cdmo, "", served=True).json()["items"]] == ["redacted"]
    assert check(other, "?cursor=" + encode_cursor(theirs["id"]), served=True).json() == {
        "items": [],
        "next_cursor": None,
    }
    # filters, odd or invalid parameters: handed over, answered alike (422s included)
    for query in (
        "?status=open",
        "?limit=2&limit=3",
        "?limit=0",
        "?limit=201",
        "?limit=007",
        "?limit=",
        "?limit=x",
        "?cursor=",
        "?cursor=nope",
        "?cursor=a%2Bb",
        "?cursor=a+b",
        "?unknown=1",
        "?limit=2&",
    ):
        check(maker, query, served=False)


def test_a_read_without_a_valid_key_is_refused_alike(
    api: Api, backend: Backend, usual: TestClient
) -> None:
    maker = api.maker()
    project = api.project(maker)
    _warm(maker, usual)
    services, lean = backend.services, backend.client
    path = f"/v1/projects/{project['id']}"
    for key in (None, "", "ck_not_a_key", "x" * 500):
        assert compare(services, lean, usual, path, key, served=False).status_code == 401
    for header in ("Basic abc", "Bearer", "bearer "):
        response = compare(
            services, lean, usual, path, None, served=False, headers={"Authorization": header}
        )
        assert response.status_code == 401
    # revoked: the revoking app forgets the key at once, the other through Redis
    keys = ok(api.operator.get(f"/v1/orgs/{maker.id}/keys"))["items"]
    assert compare(services, lean, usual, path, maker.key, served=True).status_code == 200
    ok(maker.delete(f"/v1/orgs/{maker.id}/keys/{keys[0]['id']}"))
    auth = {"Authorization": f"Bearer {maker.key}"}
    for _ in range(100):  # the broadcast reaches the second instance within milliseconds
        if usual.get("/v1/orgs/me", headers=auth).status_code == 401:
            break
    assert compare(services, lean, usual, path, maker.key, served=False).status_code == 401


@pytest.fixture(scope="module")
def limited_pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, key_prefix: str
) -> Iterator[tuple[Backend, TestClient]]:
    """Both instances with a limit of 4 requests per key and hour, each counting in its own
    Redis namespace (so each sees the same requests)."""
    tmp = tmp_path_factory.mktemp("lean-limited")
    limit = RateLimitSettings(requests=4, window_s=3600)
    settings, services = open_backend(
        request, "services", tmp, f"{key_prefix}ll:", rate_limit=limit
    )
    off = _lean_off(settings).model_copy(
        update={"redis": settings.redis.model_copy(update={"key_prefix": f"{key_prefix}lu:"})}
    )
    with (
        TestClient(create_app(settings, services)) as lean,
        TestClient(create_app(off, build_services(off))) as usual,
    ):
        yield Backend("services", settings, services, lean, f"{key_prefix}ll:"), usual


def test_the_rate_limit_counts_a_lean_read_once_and_refuses_alike(
    limited_pair: tuple[Backend, TestClient],
) -> None:
    backend, usual = limited_pair
    backend.reset()
    api = Api(backend)
    maker = api.tenant("maker")  # the operator's requests count against the operator's key
    secret_project = ok(
        api.operator.post("/v1/projects", json=project_body(maker_id=maker.id)), 201
    )
    path = f"/v1/projects/{secret_project['id']}"
    _warm(maker, usual)  # 1 of 4
    statuses = []
    for _ in range(4):
        response = compare(
            backend.services, backend.client, usual, path, maker.key, served=len(statuses) < 3
        )
        statuses.append(response.status_code)
    assert statuses == [200, 200, 200, 429]
    assert "retry-after" in response.headers
    # a 404 handed over after the lean path counted it is counted once, not twice
    backend.reset()
    api = Api(backend)
    maker = api.tenant("maker")
    _warm(maker, usual)  # 1
    missing = [
        compare(
            backend.services, backend.client, usual, "/v1/projects/prj_nope", maker.key, served=True
        ).status_code
        for _ in range(3)
    ]  # 2, 3, 4
    assert missing == [404, 404, 404]  # counted twice, the third would have been a 429


def test_a_listing_patch_is_answered_alike(api: Api, backend: Backend, usual: TestClient) -> None:
    cdmo, other, maker = api.cdmo(), api.cdmo(), api.maker()
    twins = [api.site(cdmo) for _ in range(2)]
    lean_listing, usual_listing = (
        api.listing(cdmo, site["id"], capacity_hours=500, reserved_hours=50) for site in twins
    )
    for tenant in (cdmo, other, maker, api.operator):
        _warm(tenant, usual)
    services, lean = backend.services, backend.client
    lean_path = f"/v1/listings/{lean_listing['id']}"
    version = lean_listing["version"]

    def written(tenant: Tenant, body: dict[str, Any], if_match: str) -> dict[str, Any]:
        """The same PATCH to the twins: the lean app writes the first, the usual the second."""
        response = compare(
            services,
            lean,
            usual,
            lean_path,
            tenant.key,
            served=True,
            method="PATCH",
            content=json.dumps(body),
            headers={"If-Match": if_match},
            usual_path=f"/v1/listings/{usual_listing['id']}",
            normalise=_twin,
        )
        assert response.status_code == 200, response.text
        return response.json()

    def refused(tenant: Tenant, content: str | bytes, *, served: bool, **headers: str) -> int:
        """A PATCH that writes nothing, sent to the lean app's listing on both apps."""
        return compare(
            services,
            lean,
            usual,
            lean_path,
            tenant.key,
            served=served,
            method="PATCH",
            content=content,
            headers=headers,
        ).status_code

    answer = written(cdmo, {"capacity_hours": 600}, f'"{version}"')
    assert (answer["capacity_hours"], answer["version"]) == (600, version + 1)
    answer = written(cdmo, {"price_per_hour": 95.5, "reserved_hours": 20}, f'"{version + 1}"')
    assert (answer["free_hours"], answer["version"]) == (580, version + 2)
    answer = written(api.operator, {"capacity_hours": 700}, f'W/"1", "{version + 2}", "99"')
    assert answer["version"] == version + 3
    current = f'"{version + 3}"'
    body = json.dumps({"capacity_hours": 400})
    # the statement writes nothing; the usual path answers (after the body was replayed)
    assert refused(cdmo, body, served=True, **{"If-Match": f'"{version}"'}) == 412
    assert refused(other, body, served=True, **{"If-Match": current}) == 404
    reserved_over = json.dumps({"reserved_hours": 900})
    assert refused(cdmo, reserved_over, served=True, **{"If-Match": current}) == 409
    # handed over before any statement
    assert refused(maker, body, served=False, **{"If-Match": current}) == 403
    assert refused(cdmo, body, served=False) == 428
    assert refused(cdmo, body, served=False, **{"If-Match": "*"}) == 428
    assert refused(cdmo, body, served=False, **{"If-Match": "nope"}) == 422
    for bad in ('{"capacity_hours": null}', '{"capacity_hours": -1}', "{", "[]", '"x"', ""):
        assert refused(cdmo, bad, served=False, **{"If-Match": current}) in (400, 422), bad
    nul = json.dumps({"capacity_hours": 1, "note\u0000": "x"})
    assert refused(cdmo, nul, served=False, **{"If-Match": current}) == 422
    assert (
        refused(cdmo, body, served=False, **{"If-Match": current, "Content-Type": "text/plain"})
        == 415
    )
    big = json.dumps({"capacity_hours": 400, "pad": " " * 9000})
    refused(cdmo, big, served=False, **{"If-Match": current})
    # nothing above wrote: the listing is as the last write left it
    after = ok(cdmo.get(lean_path))
    assert (after["version"], after["capacity_hours"]) == (version + 3, 700)


def _twin(body: dict[str, Any]) -> dict[str, Any]:
    """A listing's answer without what differs between twins (ids, times)."""
    return {k: v for k, v in body.items() if k not in ("id", "site_id", "created_at", "updated_at")}


def test_a_project_post_is_answered_alike_with_and_without_a_key(
    api: Api, backend: Backend, usual: TestClient
) -> None:
    maker, cdmo = api.maker(), api.cdmo()
    for tenant in (maker, cdmo, api.operator):
        _warm(tenant, usual)
    services, lean = backend.services, backend.client

    def post(
        tenant: Tenant, body: Any, *, served: bool, twin: bool = False, **headers: str
    ) -> httpx.Response:
        """``twin``: each app creates its own project (compared without ids and times)."""
        content = body if isinstance(body, str) else json.dumps(body)
        return compare(
            services,
            lean,
            usual,
            "/v1/projects",
            tenant.key,
            served=served,
            method="POST",
            content=content,
            headers=headers,
            normalise=_created if twin else None,
        )

    before = _count(api)
    created = post(maker, project_body(), served=True, twin=True)
    assert created.status_code == 201
    assert created.headers["location"] == f"/v1/projects/{created.json()['id']}"
    nulls = project_body(budget_ceiling=None, excluded_cdmo_ids=[cdmo.id], maker_id=maker.id)
    assert post(api.operator, nulls, served=True, twin=True).status_code == 201
    assert _count(api) == before + 4  # each app created its own two
    # with an Idempotency-Key: the lean app creates and records it; then both replay it
    body = project_body(title="Keyed")
    first = compare(
        services,
        lean,
        usual,
        "/v1/projects",
        maker.key,
        served=True,
        method="POST",
        content=json.dumps(body),
        headers={"Idempotency-Key": "k-1"},
        normalise=_created,
    )
    assert first.status_code == 201
    replay = post(maker, body, served=True, **{"Idempotency-Key": "k-1"})
    assert replay.content == first.content and replay.headers["idempotent-replayed"] == "true"
    assert replay.headers["location"] == first.headers["location"]
    other_body = project_body(title="Other")
    assert post(maker, other_body, served=True, **{"Idempotency-Key": "k-1"}).status_code == 422
    assert post(maker, body, served=False, **{"Idempotency-Key": "a b"}).status_code == 422
    assert post(maker, body, served=False, **{"Idempotency-Key": "x" * 256}).status_code == 422
    assert _count(api) == before + 5  # the usual app replayed k-1
    # refused: by a check of the statement, or before it
    assert post(api.operator, project_body(), served=False).status_code == 422  # no maker_id
    not_a_maker = project_body(maker_id=cdmo.id)
    assert post(api.operator, not_a_maker, served=True).status_code == 422
    not_cdmos = project_body(excluded_cdmo_ids=[maker.id])
    assert post(maker, not_cdmos, served=True).status_code == 422
    assert post(cdmo, project_body(), served=False).status_code == 403
    for bad in ("{", "[]", "{}", json.dumps(project_body(priority=11))):
        assert post(maker, bad, served=False).status_code in (400, 422), bad
    assert post(maker, project_body(title="a\u0000b"), served=False).status_code == 422
    assert _count(api) == before + 5  # the usual app replayed k-1


def _created(body: dict[str, Any]) -> dict[str, Any]:
    """A created project's answer without what differs between two creations."""
    return {k: v for k, v in body.items() if k not in ("id", "created_at", "updated_at")}


def _count(api: Api) -> int:
    return len(ok(api.operator.get("/v1/projects?limit=200"))["items"])


def test_no_request_slot_is_the_same_503_on_both_paths(
    api: Api, backend: Backend, usual: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    maker = api.maker()
    project = api.project(maker)
    _warm(maker, usual)
    usual_services = usual.app.state.services  # type: ignore[attr-defined]
    for slots in (backend.services.db.slots, usual_services.db.slots):

        @asynccontextmanager
        async def refused(slots: Any = slots) -> AsyncIterator[None]:
            raise slots._refuse("no database slot within 0.5 s")
            yield

        monkeypatch.setattr(slots, "hold", refused)
    for path in (f"/v1/projects/{project['id']}", "/v1/projects"):
        response = compare(backend.services, backend.client, usual, path, maker.key, served=False)
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
    body = json.dumps(project_body())
    response = compare(
        backend.services,
        backend.client,
        usual,
        "/v1/projects",
        maker.key,
        served=False,
        method="POST",
        content=body,
    )
    assert response.status_code == 503
