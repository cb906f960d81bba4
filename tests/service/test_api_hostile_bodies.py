"""Hostile request bodies: each gets a clean 4xx problem (never a 500) and writes nothing.
(A body that never arrives is in test_server_resilience.py: it needs a real socket.)"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from service_testkit import Api, Tenant, ok, project_body

JSON = {"Content-Type": "application/json"}


def _deep(depth: int) -> bytes:
    return b'{"title": ' + b"[" * depth + b"]" * depth + b"}"


def _chunks(data: bytes, size: int = 65536) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


HOSTILE: dict[str, tuple[bytes, set[int]]] = {
    "oversized": (json.dumps(project_body(title="x" * 2_000_000)).encode(), {413}),
    "10k-deep nesting": (_deep(10_000), {400, 422}),
    "100k-deep nesting": (_deep(100_000), {400, 413, 422}),
    "huge string": (json.dumps(project_body(title="x" * 900_000)).encode(), {422}),
    "huge key": (json.dumps({"k" * 500_000: 1, **project_body()}).encode(), {422}),
    "invalid UTF-8": (b'{"title": "\xff\xfe\xfd", "priority": 1}', {400, 422}),
    "lone surrogate": (b'{"title": "\\ud800"}', {400, 422}),
    "NUL": (json.dumps(project_body(title="a\x00b")).encode(), {422}),
    "NUL in a key": (json.dumps({**project_body(), "a\x00": 1}).encode(), {422}),
    "1e400 as a float": (
        json.dumps(project_body())
        .replace('"budget_ceiling": 250000', '"budget_ceiling": 1e400')
        .encode(),
        {422},
    ),
    "1e400 as an int": (
        json.dumps(project_body()).replace('"priority": 7', '"priority": 1e400').encode(),
        {422},
    ),
    "NaN": (
        json.dumps(project_body())
        .replace('"budget_ceiling": 250000', '"budget_ceiling": NaN')
        .encode(),
        {400, 422},
    ),
    "huge integer": (
        json.dumps(project_body()).replace('"priority": 7', '"priority": ' + "9" * 5000).encode(),
        {400, 422},
    ),
    "a million-element array": (
        b'{"target_markets": [' + b",".join([b'"EU"'] * 200_000) + b"]}",
        {413, 422},
    ),
    "not an object": (b'"just a string"', {422}),
    "empty": (b"", {422}),
    "truncated": (b'{"title": "x', {400}),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_body_gets_a_clean_4xx_and_writes_nothing(api: Api, name: str) -> None:
    maker = api.maker()
    body, expected = HOSTILE[name]
    response = maker.post("/v1/projects", content=body, headers=JSON)
    assert response.status_code in expected, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/problem+json")
    assert _projects(maker) == 0
    # the same on an update, with a valid If-Match
    project = api.project(maker)
    patched = maker.patch(
        f"/v1/projects/{project['id']}",
        content=body,
        headers={**JSON, "If-Match": f'"{project["version"]}"'},
    )
    assert 400 <= patched.status_code < 500, (patched.status_code, patched.text[:300])
    assert ok(maker.get(f"/v1/projects/{project['id']}")) == project


def test_an_oversized_body_without_content_length_is_cut_off_at_the_limit(api: Api) -> None:
    maker = api.maker()
    body = json.dumps(project_body(title="x" * 3_000_000)).encode()
    response = maker.post("/v1/projects", content=_chunks(body), headers=JSON)
    assert response.status_code == 413, response.text[:300]
    assert _projects(maker) == 0


def _projects(maker: Tenant) -> int:
    return len(ok(maker.get("/v1/projects?limit=200"))["items"])
