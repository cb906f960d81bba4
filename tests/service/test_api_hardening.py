"""Authentication before the body, bounded headers, dates, the OpenAPI error statuses, the
API-key cache and its revocation, and the database invariants (`cdmo check`)."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from service_testkit import Api, Backend, assert_problem, ok, open_backend, project_body
from sqlalchemy import text

from service.app import create_app
from service.checks import run_checks
from service.config import AuthSettings


@pytest.mark.parametrize("header", [None, "Bearer ck_not_a_key"])
def test_an_unauthenticated_malformed_post_is_401_not_400(api: Api, header: str | None) -> None:
    headers = {"Content-Type": "application/json"}
    if header:
        headers["Authorization"] = header
    for path in ("/v1/projects", "/v1/orgs", "/v1/sites"):
        response = api.client.post(path, content=b'{"title": ', headers=headers)
        assert_problem(response, 401, "unauthenticated")
    # a valid key with the same body gets the 400 it deserves
    maker = api.maker()
    json_type = {"Content-Type": "application/json"}
    assert_problem(
        maker.post("/v1/projects", content=b'{"title": ', headers=json_type),
        400,
        "malformed-json",
    )


def test_year_zero_and_other_millennia_are_rejected(api: Api) -> None:
    maker = api.maker()
    for start in ("0000-01", "1999-12", "3000-01"):
        body = project_body(window_start=start, window_end="2027-03")
        problem = assert_problem(maker.post("/v1/projects", json=body), 422, "validation-error")
        assert problem["errors"][0]["field"] == "window_start"
    assert _count(api) == 0


def test_if_match_is_bounded(api: Api) -> None:
    maker = api.maker()
    project = api.project(maker)
    url = f"/v1/projects/{project['id']}"
    many = ", ".join(f'"{i}"' for i in range(10_000))
    problem = assert_problem(
        maker.patch(url, json={"priority": 2}, headers={"If-Match": many}),
        422,
        "validation-error",
    )
    assert problem["errors"][0]["code"] == "too_many_etags"
    twenty = ", ".join(f'"{i}"' for i in range(19)) + f', "{project["version"]}"'
    assert ok(maker.patch(url, json={"priority": 2}, headers={"If-Match": twenty}))["priority"] == 2


def test_every_operation_with_a_body_documents_400_and_every_authenticated_one_503(
    api: Api,
) -> None:
    doc = api.client.get("/openapi.json").json()
    missing = []
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            codes = set(operation["responses"])
            if "requestBody" in operation and not {"400", "408"} <= codes:
                missing.append(f"{method.upper()} {path}: body without 400/408")
            if path.startswith("/v1/") and not {"401", "503"} <= codes:
                missing.append(f"{method.upper()} {path}: no 401/503")
    assert not missing, missing


def test_a_revoked_key_is_refused_at_once_by_the_process_that_revoked_it(api: Api) -> None:
    maker = api.maker()
    ok(maker.get("/v1/orgs/me"))  # now cached
    keys = ok(api.operator.get(f"/v1/orgs/{maker.id}/keys"))["items"]
    ok(api.operator.delete(f"/v1/orgs/{maker.id}/keys/{keys[0]['id']}"))
    assert_problem(maker.get("/v1/orgs/me"), 401, "unauthenticated")


@pytest.fixture
def second_process(
    backend: Backend, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
):  # type: ignore[no-untyped-def]
    """Another app on the same database and Redis, sharing nothing else: what a second API
    process is. A long cache TTL, so only the broadcast can make it forget a key."""
    if backend.name != "services":
        pytest.skip("a second process shares the database only with PostgreSQL + Redis")
    settings, services = open_backend(
        request,
        "services",
        tmp_path_factory.mktemp("second"),
        backend.services.settings.redis.key_prefix,
        database_url=backend.settings.database_url,
        auth=AuthSettings(hmac_secret=backend.settings.auth.hmac_secret, cache_ttl_s=3600),
    )
    with TestClient(create_app(settings, services)) as client:
        yield client


def test_a_revoked_key_is_refused_by_every_process_within_a_second(
    api: Api, second_process: TestClient
) -> None:
    maker = api.maker()
    other = {"Authorization": f"Bearer {maker.key}"}
    assert second_process.get("/v1/orgs/me", headers=other).status_code == 200  # cached there
    keys = ok(api.operator.get(f"/v1/orgs/{maker.id}/keys"))["items"]
    ok(api.operator.delete(f"/v1/orgs/{maker.id}/keys/{keys[0]['id']}"))
    deadline = time.monotonic() + 1.0
    status = 200
    while time.monotonic() < deadline and status == 200:
        status = second_process.get("/v1/orgs/me", headers=other).status_code
        time.sleep(0.02)
    assert status == 401


def test_without_the_broadcast_a_revoked_key_expires_with_the_cache_ttl(
    backend: Backend, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A revocation written behind the API's back (no broadcast) is honoured after
    ``cache_ttl_s``: the bound stated in the README."""
    backend.reset()
    settings, services = open_backend(
        request,
        backend.name,
        tmp_path_factory.mktemp("ttl"),
        backend.base_prefix,
        auth=AuthSettings(cache_ttl_s=0.5),
    )
    with TestClient(create_app(settings, services)) as client:
        api = Api(Backend(backend.name, settings, services, client, backend.base_prefix))
        maker = api.maker()
        ok(maker.get("/v1/orgs/me"))
        with services.db.engine.begin() as conn:
            conn.execute(
                text("UPDATE api_keys SET revoked_at = CURRENT_TIMESTAMP WHERE org_id = :o"),
                {"o": maker.id},
            )
        assert maker.get("/v1/orgs/me").status_code == 200  # still cached
        time.sleep(0.6)
        assert_problem(maker.get("/v1/orgs/me"), 401, "unauthenticated")


def test_cdmo_check_passes_on_consistent_data_and_names_each_violation(api: Api) -> None:
    maker, cdmo = api.maker(), api.cdmo()
    site = api.site(cdmo)
    api.listing(cdmo, site["id"])
    project = api.project(maker, status="open")
    api.propose(project["id"], site["id"])
    ok(maker.post("/v1/projects", json=project_body(), headers={"Idempotency-Key": "a"}), 201)
    db = api.backend.db
    assert all(o.ok for o in run_checks(db)), [o.violations for o in run_checks(db)]
    with db.engine.begin() as conn:
        conn.execute(
            text("UPDATE projects SET status = 'open' WHERE id = :p"), {"p": project["id"]}
        )
        conn.execute(
            text(
                "INSERT INTO idempotency_records (key, fingerprint, status, headers, body,"
                " created_at, expires_at) VALUES ('half', 'f', 0, '{}', '',"
                " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
    failed = {o.check.name: o.violations for o in run_checks(db) if not o.ok}
    assert set(failed) == {"proposals", "idempotency"}, failed
    assert project["id"] in failed["proposals"][0]


def _count(api: Api) -> int:
    return len(ok(api.operator.get("/v1/projects?limit=200"))["items"])
