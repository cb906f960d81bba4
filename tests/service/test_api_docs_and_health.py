"""OpenAPI document, health, readiness, metrics, problem-type pages."""

from __future__ import annotations

from typing import Any

from service_testkit import Api, assert_problem, ok

METHODS = ("get", "post", "put", "patch", "delete")
ENDPOINTS = {
    ("/v1/projects/{project_id}/candidates", "get"),
    ("/v1/candidates", "post"),
    ("/v1/projects", "post"),
    ("/v1/projects", "get"),
    ("/v1/projects/{project_id}", "get"),
    ("/v1/projects/{project_id}", "patch"),
    ("/v1/projects/{project_id}", "delete"),
    ("/v1/projects/{project_id}/proposals", "get"),
    ("/v1/sites", "post"),
    ("/v1/sites", "get"),
    ("/v1/sites/{site_id}", "get"),
    ("/v1/sites/{site_id}", "patch"),
    ("/v1/sites/{site_id}", "delete"),
    ("/v1/sites/{site_id}/listings", "get"),
    ("/v1/sites/{site_id}/listings", "post"),
    ("/v1/listings", "get"),
    ("/v1/listings/{listing_id}", "get"),
    ("/v1/listings/{listing_id}", "put"),
    ("/v1/listings/{listing_id}", "patch"),
    ("/v1/listings/{listing_id}", "delete"),
    ("/v1/proposals", "post"),
    ("/v1/proposals", "get"),
    ("/v1/proposals/{proposal_id}", "get"),
    ("/v1/proposals/{proposal_id}", "patch"),
    ("/v1/proposals/{proposal_id}/accept", "post"),
    ("/v1/proposals/{proposal_id}/decline", "post"),
    ("/v1/proposals/{proposal_id}/confirm", "post"),
    ("/v1/proposals/{proposal_id}/withdraw", "post"),
    ("/v1/pair-rules", "post"),
    ("/v1/pair-rules", "get"),
    ("/v1/pair-rules/{rule_id}", "delete"),
    ("/v1/orgs/me/webhook", "put"),
    ("/v1/orgs/me/webhook", "get"),
    ("/v1/orgs/me/webhook", "delete"),
    ("/v1/orgs/me/events", "get"),
    ("/v1/market/snapshot", "get"),
    ("/v1/market/version", "get"),
    ("/v1/orgs", "post"),
    ("/v1/orgs", "get"),
    ("/v1/orgs/me", "get"),
    ("/v1/orgs/{org_id}", "get"),
    ("/v1/orgs/{org_id}/keys", "post"),
    ("/v1/orgs/{org_id}/keys", "get"),
    ("/v1/orgs/{org_id}/keys/{key_id}", "delete"),
    ("/v1/cdmos", "get"),
    ("/v1/match-runs", "post"),
    ("/v1/match-runs", "get"),
    ("/v1/match-runs/{run_id}", "get"),
    ("/v1/match-runs/{run_id}/cancel", "post"),
    ("/v1/match-runs/{run_id}/replay", "post"),
    ("/v1/match-runs/{run_id}/assignments", "get"),
    ("/v1/match-runs/{run_id}/placements-by-cdmo", "get"),
    ("/v1/match-runs/{run_id}/unassigned", "get"),
    ("/v1/match-runs/{run_id}/events", "get"),
    ("/v1/match-runs/{run_id}/utilisation", "get"),
    ("/v1/match-runs/{run_id}/bottlenecks", "get"),
    ("/v1/projects/{project_id}/explanation", "get"),
    ("/v1/proposals/{proposal_id}/explanation", "get"),
    ("/health", "get"),
    ("/ready", "get"),
    ("/metrics", "get"),
    ("/problems/{slug}", "get"),
}


def _operations(doc: dict[str, Any]):  # type: ignore[no-untyped-def]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield path, method, op


def test_openapi_3_1_lists_every_route_with_examples(api: Api) -> None:
    doc = ok(api.client.get("/openapi.json"))
    assert doc["openapi"].startswith("3.1")
    documented = {(p, m) for p, m, _ in _operations(doc)}
    assert documented == ENDPOINTS
    missing = []
    for path, method, op in _operations(doc):
        assert op.get("summary"), (method, path)
        body = op.get("requestBody", {}).get("content", {})
        for media_type, media in body.items():
            if "example" not in media and "examples" not in media:
                missing.append(f"{method} {path} request {media_type}")
        for status, response in op["responses"].items():
            for media_type, media in response.get("content", {}).items():
                if "example" not in media and "examples" not in media:
                    missing.append(f"{method} {path} {status} {media_type}")
                if status[0] in "45":
                    assert media_type == "application/problem+json", (method, path, status)
    assert not missing, missing


def test_openapi_documents_auth_errors_and_concurrency_headers(api: Api) -> None:
    doc = ok(api.client.get("/openapi.json"))
    scheme = doc["components"]["securitySchemes"]["ApiKey"]
    assert scheme == {"type": "http", "scheme": "bearer", "description": scheme["description"]}
    put = doc["paths"]["/v1/listings/{listing_id}"]["put"]
    assert {"412", "428", "401", "404"} <= set(put["responses"])
    assert any(p["name"] == "If-Match" and p["in"] == "header" for p in put["parameters"])
    post = doc["paths"]["/v1/projects"]["post"]
    assert any(p["name"] == "Idempotency-Key" for p in post["parameters"])
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    snapshot = doc["paths"]["/v1/market/snapshot"]["get"]
    assert snapshot["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/MarketSnapshot"
    }


def test_health_ready_and_metrics(api: Api) -> None:
    assert ok(api.client.get("/health")) == {"status": "ok"}
    ready = ok(api.client.get("/ready"))
    expected = ("sqlite", "memory") if api.backend.name == "embedded" else ("postgresql", "redis")
    assert (ready["status"], ready["database"], ready["store"], ready["migrated"]) == (
        "ready",
        *expected,
        True,
    )
    api.operator.get("/v1/projects")
    text = api.client.get("/metrics").text
    assert 'cdmo_http_requests_total{method="GET",route="/v1/projects",status="200"}' in text
    assert "cdmo_http_request_duration_seconds_bucket" in text


def test_problem_types_are_documented(api: Api) -> None:
    page = ok(api.client.get("/problems/precondition-failed"))
    assert page["status"] == 412 and page["type"] == "/problems/precondition-failed"
    assert_problem(api.client.get("/problems/no-such-thing"), 404, "not-found")


def test_the_snapshot_example_in_the_docs_is_a_valid_snapshot() -> None:
    from schemas.market import MarketSnapshot
    from service.routes.market import SNAPSHOT_EXAMPLE

    assert MarketSnapshot.model_validate(SNAPSHOT_EXAMPLE).version == 1842
