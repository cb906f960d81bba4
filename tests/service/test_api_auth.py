"""API keys and organisations: bearer auth, keys shown once and stored as HMACs."""

from __future__ import annotations

from service_testkit import Api, Tenant, assert_problem, ok
from sqlmodel import select

from service.models import ApiKey
from service.security import hash_api_key


def test_missing_malformed_and_unknown_keys_are_401(api: Api) -> None:
    problem = assert_problem(api.client.get("/v1/projects"), 401, "unauthenticated")
    assert "Bearer" in problem["detail"]
    response = api.client.get("/v1/projects")
    assert response.headers["www-authenticate"].startswith("Bearer")
    for header in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer ck_not-a-real-key", "ck_raw"):
        assert_problem(
            api.client.get("/v1/projects", headers={"Authorization": header}),
            401,
            "unauthenticated",
        )
    huge = "Bearer " + "x" * 5000
    assert_problem(
        api.client.get("/v1/projects", headers={"Authorization": huge}), 401, "unauthenticated"
    )


def test_keys_are_shown_once_and_stored_only_as_hmac(api: Api) -> None:
    maker = api.maker()
    created = ok(api.operator.post(f"/v1/orgs/{maker.id}/keys", json={"label": "ci"}), 201)
    assert created["key"].startswith("ck_") and len(created["key"]) >= 40
    assert created["prefix"] == created["key"][:11]
    listed = ok(api.operator.get(f"/v1/orgs/{maker.id}/keys"))["items"]
    assert all("key" not in k for k in listed)
    secret = api.backend.settings.auth.hmac_secret.get_secret_value()
    with api.backend.db.session(write=False) as session:
        rows = session.exec(select(ApiKey).where(ApiKey.org_id == maker.id)).all()
    stored = {r.id: r.key_hash for r in rows}
    assert stored[created["id"]] == hash_api_key(created["key"], secret)
    assert created["key"] not in stored.values()
    new = Tenant(maker.id, "maker", maker.name, created["key"], api.client)
    assert ok(new.get("/v1/orgs/me"))["id"] == maker.id


def test_revoked_keys_stop_working(api: Api) -> None:
    maker = api.maker()
    keys = ok(api.operator.get(f"/v1/orgs/{maker.id}/keys"))["items"]
    assert ok(maker.get("/v1/orgs/me"))["id"] == maker.id
    revoked = ok(maker.delete(f"/v1/orgs/{maker.id}/keys/{keys[0]['id']}"))
    assert revoked["revoked_at"] is not None
    assert_problem(maker.get("/v1/orgs/me"), 401, "unauthenticated")
    assert_problem(api.operator.delete(f"/v1/orgs/{maker.id}/keys/key_nope"), 404, "not-found")


def test_an_organisation_manages_its_own_keys(api: Api) -> None:
    cdmo = api.cdmo()
    extra = ok(cdmo.post(f"/v1/orgs/{cdmo.id}/keys", json={"label": "sync job"}), 201)
    assert extra["org_id"] == cdmo.id
    job = Tenant(cdmo.id, "cdmo", cdmo.name, extra["key"], api.client)
    assert ok(job.get("/v1/orgs/me"))["kind"] == "cdmo"


def test_only_operators_create_organisations_and_names_are_unique(api: Api) -> None:
    maker = api.maker("Acme Devices")
    assert_problem(
        maker.post("/v1/orgs", json={"name": "Evil", "kind": "operator"}), 403, "forbidden"
    )
    assert_problem(
        api.operator.post("/v1/orgs", json={"name": "Acme Devices", "kind": "maker"}),
        409,
        "conflict",
    )
    assert_problem(
        api.operator.post("/v1/orgs", json={"name": "X", "kind": "bank"}), 422, "validation-error"
    )
    orgs = ok(api.operator.get("/v1/orgs?kind=maker"))["items"]
    assert [o["name"] for o in orgs] == ["Acme Devices"]
    assert ok(maker.get("/v1/orgs/me"))["name"] == "Acme Devices"
