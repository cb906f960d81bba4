"""Per-key rate limiting: 429 problem+json with Retry-After, per key, configurable."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from service_testkit import BACKENDS, Api, Backend, assert_problem, open_backend

from service.app import create_app
from service.config import RateLimitSettings


@pytest.fixture(scope="module", params=BACKENDS)
def limited(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, key_prefix: str
) -> Iterator[Backend]:
    tmp = tmp_path_factory.mktemp(f"limited-{request.param}")
    settings, services = open_backend(
        request,
        request.param,
        tmp,
        key_prefix,
        rate_limit=RateLimitSettings(requests=5, window_s=3600),
    )
    with TestClient(create_app(settings, services)) as client:
        yield Backend(request.param, settings, services, client, key_prefix)


def test_the_sixth_request_in_a_window_is_429(limited: Backend) -> None:
    limited.reset()
    api = Api(limited)
    op = api.operator
    statuses = [op.get("/v1/orgs/me").status_code for _ in range(5)]
    assert statuses == [200] * 5
    response = op.get("/v1/orgs/me")
    problem = assert_problem(response, 429, "rate-limited")
    retry_after = int(response.headers["retry-after"])
    assert 0 < retry_after <= 3600
    assert problem["retry_after_s"] == retry_after
    assert response.headers["ratelimit-remaining"] == "0"


def test_limits_are_per_key_and_headers_count_down(limited: Backend) -> None:
    limited.reset()
    api = Api(limited)
    op = api.operator
    first = op.get("/v1/orgs/me")
    assert first.headers["ratelimit-limit"] == "5"
    assert first.headers["ratelimit-remaining"] == "4"
    for _ in range(5):
        op.get("/v1/orgs/me")
    assert op.get("/v1/orgs/me").status_code == 429
    # counters are per key: a fresh operator key and a maker key each get their own five
    limited.reset()
    api = Api(limited)
    maker = api.maker()  # 2 operator requests
    for _ in range(5):
        assert maker.get("/v1/orgs/me").status_code == 200
    assert maker.get("/v1/orgs/me").status_code == 429
    assert api.operator.get("/v1/orgs/me").status_code == 200  # its own counter: 3rd request
