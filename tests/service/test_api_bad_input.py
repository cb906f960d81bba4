"""Bad input: always a 4xx problem+json with one entry per invalid field, never a 500, and
nothing written (the market version and the row counts do not move)."""

from __future__ import annotations

from typing import Any

import pytest
from service_testkit import Api, Tenant, assert_problem, listing_body, ok, project_body, site_body


def _counts(api: Api) -> tuple[int, int]:
    projects = ok(api.operator.get("/v1/projects?limit=200"))["items"]
    sites = ok(api.operator.get("/v1/sites?limit=200"))["items"]
    return len(projects), len(sites)


def _unchanged(api: Api, before: tuple[int, int, int]) -> None:
    assert (api.market_version(), *_counts(api)) == before


def _state(api: Api) -> tuple[int, int, int]:
    return (api.market_version(), *_counts(api))


LOAD = [{"process": "catheter_assembly", "monthly_hours": [1, 2, 3]}]

# (case, body, [(field, code)]) — every expected field must be reported.
PROJECT_CASES: list[tuple[str, dict[str, Any], list[tuple[str, str]]]] = [
    (
        "window end before start",
        project_body(window_start="2027-05", window_end="2027-03"),
        [("window_end", "value_error")],
    ),
    (
        "loads do not fit the window",
        project_body(loads=[{"process": "catheter_assembly", "monthly_hours": [1, 2]}]),
        [("loads", "value_error")],
    ),
    (
        "negative load",
        project_body(loads=[{"process": "catheter_assembly", "monthly_hours": [1, -2, 3]}]),
        [("loads.0.monthly_hours.1", "greater_than_equal")],
    ),
    (
        "unknown enum values",
        project_body(category="toaster", target_markets=["MARS"]),
        [("category", "enum"), ("target_markets.0", "enum")],
    ),
    ("unknown field", project_body(colour="red"), [("colour", "extra_forbidden")]),
    (
        "bad month",
        project_body(window_start="2027-13"),
        [("window_start", "string_pattern_mismatch")],
    ),
    ("duplicate process", project_body(loads=LOAD + LOAD), [("loads", "value_error")]),
    (
        "duplicate market",
        project_body(target_markets=["EU", "EU"]),
        [("target_markets", "value_error")],
    ),
    ("no market", project_body(target_markets=[]), [("target_markets", "too_short")]),
    ("priority out of range", project_body(priority=11), [("priority", "less_than_equal")]),
    ("budget not positive", project_body(budget_ceiling=0), [("budget_ceiling", "greater_than")]),
    ("title too long", project_body(title="x" * 201), [("title", "string_too_long")]),
    (
        "window too long",
        project_body(window_start="2027-01", window_end="2040-01"),
        [("window_end", "value_error")],
    ),
    ("missing fields", {"title": "x"}, [("category", "missing"), ("loads", "missing")]),
    (
        "wrong types",
        project_body(priority="high", confidential="maybe"),
        [("priority", "int_parsing"), ("confidential", "bool_parsing")],
    ),
]


@pytest.mark.parametrize("case,body,expected", PROJECT_CASES, ids=[c[0] for c in PROJECT_CASES])
def test_invalid_projects(api: Api, case: str, body: dict, expected: list) -> None:
    maker = api.maker()
    before = _state(api)
    problem = assert_problem(maker.post("/v1/projects", json=body), 422, "validation-error")
    reported = {(e["field"], e["code"]) for e in problem["errors"]}
    for item in expected:
        assert item in reported, (case, problem["errors"])
    for error in problem["errors"]:
        assert error["location"] == "body"
        assert (
            error["pointer"] == "#/" + error["field"].replace(".", "/")
            if error["field"]
            else error["pointer"] == "#"
        )
        assert error["message"]
    _unchanged(api, before)


def test_malformed_json_is_400(api: Api) -> None:
    maker = api.maker()
    before = _state(api)
    for raw in (b'{"title": ', b"{'single': 'quotes'}", b"\xff\xfe", b'{"a": 1,}'):
        response = maker.post(
            "/v1/projects", content=raw, headers={"Content-Type": "application/json"}
        )
        if response.status_code == 400:
            assert_problem(response, 400, "malformed-json")
        else:  # undecodable bytes may be reported as a bad body by the framework
            assert_problem(response, 422, "validation-error")
    _unchanged(api, before)


@pytest.mark.parametrize("raw", [b"[]", b"null", b"42", b'"text"', b"", b"{}"])
def test_json_that_is_not_an_object_is_422(api: Api, raw: bytes) -> None:
    maker = api.maker()
    before = _state(api)
    response = maker.post("/v1/projects", content=raw, headers={"Content-Type": "application/json"})
    assert_problem(response, 422, "validation-error")
    _unchanged(api, before)


def test_nan_and_infinity_are_rejected(api: Api) -> None:
    cdmo = api.cdmo()
    site = api.site(cdmo)
    before = _state(api)
    for token in (b"NaN", b"Infinity", b"-Infinity", b"1e999"):
        raw = (
            b'{"process": "catheter_assembly", "month": "2027-01", "capacity_hours": '
            + token
            + b', "price_per_hour": 1}'
        )
        response = cdmo.post(
            f"/v1/sites/{site['id']}/listings",
            content=raw,
            headers={"Content-Type": "application/json"},
        )
        problem = assert_problem(response, 422, "validation-error")
        assert problem["errors"][0]["field"] == "capacity_hours"
    _unchanged(api, before)


def test_wrong_content_type_is_415(api: Api) -> None:
    maker = api.maker()
    before = _state(api)
    response = maker.post(
        "/v1/projects",
        content=b"title=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_problem(response, 415, "unsupported-media-type")
    response = maker.post(
        "/v1/projects", content=b'{"title": "x"}', headers={"Content-Type": "text/plain"}
    )
    assert_problem(response, 415, "unsupported-media-type")
    _unchanged(api, before)


def test_oversized_bodies_are_413(api: Api) -> None:
    maker = api.maker()
    limit = api.backend.settings.http.max_body_bytes
    before = _state(api)
    big = project_body(
        title="x",
        loads=[{"process": "catheter_assembly", "monthly_hours": [1.0] * 3}],
        pad="y" * (limit + 10),
    )
    assert_problem(maker.post("/v1/projects", json=big), 413, "payload-too-large")

    def chunks():  # no Content-Length: the limit must hold on the streamed body too
        yield b'{"title": "'
        for _ in range(limit // 65536 + 2):
            yield b"z" * 65536
        yield b'"}'

    response = maker.post(
        "/v1/projects", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 413, "payload-too-large")
    _unchanged(api, before)


def test_negative_and_inconsistent_capacities(api: Api) -> None:
    cdmo = api.cdmo()
    site = api.site(cdmo)
    url = f"/v1/sites/{site['id']}/listings"
    before = _state(api)
    cases = [
        (listing_body(capacity_hours=-1), "capacity_hours"),
        (listing_body(price_per_hour=-0.5), "price_per_hour"),
        (listing_body(reserved_hours=600), ""),
        (listing_body(capacity_hours=1e8), "capacity_hours"),
        (listing_body(process="welding"), "process"),
        (listing_body(month="27-01"), "month"),
    ]
    for body, field in cases:
        problem = assert_problem(cdmo.post(url, json=body), 422, "validation-error")
        assert problem["errors"][0]["field"] == field, problem
    _unchanged(api, before)


def test_invalid_sites(api: Api) -> None:
    cdmo = api.cdmo()
    before = _state(api)
    cases = [
        (site_body(country="china"), "country"),
        (site_body(region="CN", country="DE"), ""),
        (site_body(region="CN", overseas=True), ""),
        (site_body(processes=["final_test", "final_test"]), "processes"),
        (site_body(quality={"on_time_rate": 1.5}), "quality.on_time_rate"),
        (
            site_body(
                certifications=[
                    {"kind": "iso_13485", "valid_from": "2027-01-01", "valid_until": "2026-01-01"}
                ]
            ),
            "certifications.0",
        ),
        (
            site_body(
                certifications=[
                    {"kind": "iso_9001", "valid_from": "2027-01-01", "valid_until": "2028-01-01"}
                ]
            ),
            "certifications.0.kind",
        ),
    ]
    for body, field in cases:
        problem = assert_problem(cdmo.post("/v1/sites", json=body), 422, "validation-error")
        assert problem["errors"][0]["field"] == field, problem
    _unchanged(api, before)


def test_patch_with_null_for_required_field_is_422_and_writes_nothing(api: Api) -> None:
    maker = api.maker()
    project = api.project(maker)
    url = f"/v1/projects/{project['id']}"
    before = _state(api)
    for patch in (
        {"title": None},
        {"loads": None},
        {"category": "toaster"},
        {"nonsense": 1},
        {"window_start": "2027-02"},
    ):
        assert_problem(
            maker.patch(url, json=patch, headers={"If-Match": '"1"'}), 422, "validation-error"
        )
    assert ok(maker.get(url)) == project
    _unchanged(api, before)


def test_bad_headers_and_paths(api: Api) -> None:
    maker: Tenant = api.maker()
    project = api.project(maker)
    url = f"/v1/projects/{project['id']}"
    problem = assert_problem(
        maker.patch(url, json={"priority": 2}, headers={"If-Match": "v1"}), 422, "validation-error"
    )
    assert problem["errors"][0]["location"] == "header"
    problem = assert_problem(
        maker.post("/v1/projects", json=project_body(), headers={"Idempotency-Key": "a b"}),
        422,
        "validation-error",
    )
    assert problem["errors"][0]["field"] == "Idempotency-Key"
    assert_problem(maker.get("/v1/projects/has%20space"), 422, "validation-error")
    assert_problem(maker.get("/v1/nothing-here"), 404, "not-found")
    assert_problem(maker.request("PUT", "/v1/projects"), 405, "method-not-allowed")


def test_nul_characters_and_bad_unicode_never_reach_the_database(api: Api) -> None:
    maker, cdmo = api.maker(), api.cdmo()
    before = _state(api)
    problem = assert_problem(
        maker.post("/v1/projects", json=project_body(title="a\x00b")), 422, "validation-error"
    )
    assert [e["field"] for e in problem["errors"]] == ["title"]
    certs = [
        {
            "kind": "iso_13485",
            "issuer": "TUV\x00",
            "valid_from": "2025-01-01",
            "valid_until": "2026-01-01",
        }
    ]
    problem = assert_problem(
        cdmo.post("/v1/sites", json=site_body(certifications=certs)), 422, "validation-error"
    )
    assert problem["errors"][0]["pointer"] == "#/certifications/0/issuer"
    problem = assert_problem(
        maker.post(
            "/v1/projects",
            content=b'{"title": "\\ud800"}',
            headers={"Content-Type": "application/json"},
        ),
        422,
        "validation-error",
    )
    assert "title" in {e["field"] for e in problem["errors"]}
    for query in ("maker_id=a%00b", "maker_id=" + "x" * 65, "maker_id=a%20b"):
        assert_problem(maker.get(f"/v1/projects?{query}"), 422, "validation-error")
    assert_problem(cdmo.get("/v1/listings?site_id=%00"), 422, "validation-error")
    _unchanged(api, before)


def test_absurdly_nested_json_is_a_client_error(api: Api) -> None:
    maker = api.maker()
    before = _state(api)
    response = maker.post(
        "/v1/projects",
        content=b"[" * 100_000 + b"]" * 100_000,
        headers={"Content-Type": "application/json"},
    )
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"].startswith("application/problem+json")
    _unchanged(api, before)
