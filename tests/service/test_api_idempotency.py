"""Idempotent POSTs (Idempotency-Key), against the in-process store and against Redis."""

from __future__ import annotations

import json
import threading

from service_testkit import Api, assert_problem, ok, project_body

from service.idempotency import record_key
from service.models import IdempotencyRecord, Project


def _count(api: Api) -> int:
    return len(ok(api.operator.get("/v1/projects?limit=200"))["items"])


def test_a_retried_post_returns_the_first_response_and_creates_one_resource(api: Api) -> None:
    maker = api.maker()
    headers = {"Idempotency-Key": "create-stent-1"}
    first = maker.post("/v1/projects", json=project_body(), headers=headers)
    second = maker.post("/v1/projects", json=project_body(), headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["location"] == first.headers["location"]
    assert second.headers["etag"] == first.headers["etag"]
    assert second.headers.get("idempotent-replayed") == "true"
    assert "idempotent-replayed" not in first.headers
    assert _count(api) == 1
    # a new key is a new request
    third = maker.post("/v1/projects", json=project_body(), headers={"Idempotency-Key": "other"})
    assert third.status_code == 201 and third.json()["id"] != first.json()["id"]
    assert _count(api) == 2


def test_the_same_key_with_another_body_is_rejected(api: Api) -> None:
    maker = api.maker()
    headers = {"Idempotency-Key": "k-1"}
    ok(maker.post("/v1/projects", json=project_body(), headers=headers), 201)
    assert_problem(
        maker.post("/v1/projects", json=project_body(priority=1), headers=headers),
        422,
        "idempotency-key-reused",
    )
    assert _count(api) == 1


def test_keys_are_scoped_per_organisation_and_path(api: Api) -> None:
    m1, m2 = api.maker(), api.maker()
    headers = {"Idempotency-Key": "shared-key"}
    a = ok(m1.post("/v1/projects", json=project_body(), headers=headers), 201)
    b = ok(m2.post("/v1/projects", json=project_body(), headers=headers), 201)
    assert a["id"] != b["id"] and b["maker_id"] == m2.id
    cdmo = api.cdmo()
    ok(
        cdmo.post(
            "/v1/sites", json={"name": "S", "country": "CN", "region": "CN"}, headers=headers
        ),
        201,
    )
    assert _count(api) == 2


def test_client_errors_are_not_recorded_and_the_retry_is_evaluated_again(api: Api) -> None:
    """A failed request created nothing, so its retry simply runs again (and may succeed)."""
    maker = api.maker()
    headers = {"Idempotency-Key": "bad-1"}
    body = project_body(window_end="2026-01")
    first = assert_problem(
        maker.post("/v1/projects", json=body, headers=headers), 422, "validation-error"
    )
    second = maker.post("/v1/projects", json=body, headers=headers)
    assert second.status_code == 422 and second.json() == first
    assert "idempotent-replayed" not in second.headers
    assert _count(api) == 0
    # the same key then succeeds once, with its own body, and replays from then on
    good = ok(maker.post("/v1/projects", json=project_body(), headers=headers), 201)
    again = maker.post("/v1/projects", json=project_body(), headers=headers)
    assert again.json() == good and again.headers["idempotent-replayed"] == "true"
    assert _count(api) == 1


def test_the_record_is_committed_with_the_resource(api: Api) -> None:
    """The idempotency record and the project are in the same database, written by the same
    commit: after the POST both exist, and the record holds exactly the response sent."""
    maker = api.maker()
    response = maker.post("/v1/projects", json=project_body(), headers={"Idempotency-Key": "k"})
    created = ok(response, 201)
    key = record_key(maker.id, "POST", "/v1/projects", "k")
    with api.backend.db.session(write=False) as session:
        record = session.get(IdempotencyRecord, key)
        assert record is not None
        assert record.status == 201 and json.loads(record.body) == created
        assert record.headers["Location"] == f"/v1/projects/{created['id']}"
        assert session.get(Project, created["id"]) is not None


def test_concurrent_duplicates_create_exactly_one_resource(api: Api) -> None:
    """Twins wait on the first request's claim, then replay its answer."""
    maker = api.maker()
    n = 6
    barrier = threading.Barrier(n)
    statuses: list[int] = []
    ids: set[str] = set()

    def post() -> None:
        barrier.wait()
        r = maker.post("/v1/projects", json=project_body(), headers={"Idempotency-Key": "race"})
        statuses.append(r.status_code)
        if r.status_code == 201:
            ids.add(r.json()["id"])

    threads = [threading.Thread(target=post) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert statuses == [201] * n, statuses
    assert len(ids) == 1
    assert _count(api) == 1


def test_keys_on_other_post_endpoints(api: Api) -> None:
    cdmo = api.cdmo()
    site = api.site(cdmo)
    body = {"process": "final_test", "month": "2027-05", "capacity_hours": 10, "price_per_hour": 5}
    url = f"/v1/sites/{site['id']}/listings"
    a = ok(cdmo.post(url, json=body, headers={"Idempotency-Key": "l1"}), 201)
    b = ok(cdmo.post(url, json=body, headers={"Idempotency-Key": "l1"}), 201)
    assert a == b
    # without the key the retry is a plain duplicate
    assert_problem(cdmo.post(url, json=body), 409, "conflict")
    # key creation is deliberately not replayed: no plaintext key may sit in the store
    keys = [
        ok(
            api.operator.post(
                f"/v1/orgs/{cdmo.id}/keys",
                json={"label": "x"},
                headers={"Idempotency-Key": "key-1"},
            ),
            201,
        )
        for _ in range(2)
    ]
    assert keys[0]["key"] != keys[1]["key"]
    listed = ok(api.operator.get(f"/v1/orgs/{cdmo.id}/keys"))["items"]
    assert sorted(k["label"] for k in listed) == ["t", "x", "x"]


def test_expired_records_are_purged_and_their_keys_reusable(api: Api) -> None:
    import datetime as dt

    from service.idempotency import purge_expired

    maker = api.maker()
    first = ok(
        maker.post("/v1/projects", json=project_body(), headers={"Idempotency-Key": "e"}), 201
    )
    db = api.backend.db
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)  # past the 24 h TTL
    with db.session() as session:
        assert purge_expired(session, later) == 1
        session.commit()
    again = maker.post("/v1/projects", json=project_body(), headers={"Idempotency-Key": "e"})
    assert again.status_code == 201 and again.json()["id"] != first["id"]
    assert "idempotent-replayed" not in again.headers
