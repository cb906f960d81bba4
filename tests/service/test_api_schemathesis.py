"""Schemathesis over the live OpenAPI document, with each role's key: no 5xx, no response
that breaks its schema, no undocumented status, the documented content types.

Bounded in CI (``SCHEMATHESIS_MAX_EXAMPLES``, default 3 per operation and role, about 300
calls per backend). The full run, against a running server:

    SCHEMATHESIS_MAX_EXAMPLES=500 .venv/bin/python -m pytest tests/service/test_api_schemathesis.py
    .venv/bin/st run http://127.0.0.1:8000/openapi.json -H "Authorization: Bearer $KEY" \\
        --checks not_a_server_error,status_code_conformance,response_schema_conformance,\\
content_type_conformance --max-examples 500
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks
from service_testkit import Api, ok, project_body

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "3"))
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.response_schema_conformance,
    checks.content_type_conformance,
]


@pytest.mark.parametrize("role", ["maker", "cdmo", "operator"])
def test_schemathesis_finds_nothing(api: Api, role: str) -> None:
    maker, cdmo = api.maker(), api.cdmo()
    site = api.site(cdmo)
    api.listing(cdmo, site["id"])
    project = api.project(maker, status="open")
    api.propose(project["id"], site["id"])
    ok(maker.post("/v1/projects", json=project_body()), 201)
    key = {"maker": maker, "cdmo": cdmo, "operator": api.operator}[role].key
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.client.app)
    failures: dict[str, str] = {}
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def run(case: schemathesis.Case) -> None:
            nonlocal calls
            calls += 1
            case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, checks=CHECKS)

        try:
            run()
        except Exception as exc:  # each operation's first failure, all reported together
            failures[operation.label] = str(exc)[:1000]
    assert calls >= len(list(schema.get_all_operations()))
    assert not failures, "\n\n".join(f"{k}: {v}" for k, v in failures.items())
