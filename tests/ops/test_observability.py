"""Structured logs with request and run ids, the request-id header, latency per route template."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.db import upgrade
from service.demo import load_demo
from service.observability import bind_run, configure_logging
from service.runtime import build_services


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    configure_logging("INFO", "json", stream=buffer)
    yield buffer
    configure_logging("INFO", "console")


# Lines that are not ours to assert on: the test client's own "HTTP Request" lines, and the
# embedded app's background sweeps (expiry, webhooks, reaper), which log on their own threads
# at their own times and so can land between a request's lines.
_NOT_OURS = ("httpx", "service.jobs.", "service.housekeeping")


def _records(buffer: io.StringIO) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    return [r for r in records if not r["logger"].startswith(_NOT_OURS)]


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    settings = Settings(env="test", data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/t.db")
    services = build_services(settings)
    upgrade(services.db.engine)
    keys = load_demo(services.db, secret=settings.auth.hmac_secret.get_secret_value())
    app = create_app(settings, services)

    @app.get("/_test/log", include_in_schema=False)
    def log_inside_a_request() -> dict[str, str]:
        logging.getLogger("service.flows.example").warning("inside", extra={"run_id": "run_9"})
        return {}

    with TestClient(app) as client:
        yield client, keys


def test_stdlib_extra_and_bound_run_id_are_rendered(log_lines: io.StringIO) -> None:
    logging.getLogger("service.jobs").info("claimed", extra={"run_id": "run_1", "attempt": 2})
    with bind_run("run_2"):
        structlog.get_logger("service.worker").info("phase", phase="build")
        logging.getLogger("matcher.market").info("plain stdlib line")
    logging.getLogger("service.jobs").info("after the block")
    claimed, phase, plain, after = _records(log_lines)
    assert (claimed["event"], claimed["run_id"], claimed["attempt"]) == ("claimed", "run_1", 2)
    assert claimed["level"] == "info" and claimed["logger"] == "service.jobs"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$", claimed["timestamp"])
    assert (phase["run_id"], phase["phase"], phase["logger"]) == (
        "run_2",
        "build",
        "service.worker",
    )
    assert plain["run_id"] == "run_2"
    assert "run_id" not in after


def test_exceptions_are_one_json_line(log_lines: io.StringIO) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("service.x").exception("failed")
    (record,) = _records(log_lines)
    assert record["level"] == "error" and "ValueError: boom" in record["exception"]


def test_every_request_line_carries_the_request_id(
    demo: tuple[TestClient, dict[str, str]], log_lines: io.StringIO
) -> None:
    client, _ = demo
    response = client.get("/_test/log", headers={"X-Request-ID": "client-req-42"})
    assert response.headers["X-Request-ID"] == "client-req-42"
    inside, access = _records(log_lines)
    assert (inside["event"], inside["request_id"], inside["run_id"]) == (
        "inside",
        "client-req-42",
        "run_9",
    )
    assert access["event"] == "request" and access["request_id"] == "client-req-42"
    assert (access["route"], access["status"]) == ("/_test/log", 200)
    assert access["duration_ms"] >= 0


def test_a_request_id_is_generated_when_missing_or_unsafe(
    demo: tuple[TestClient, dict[str, str]], log_lines: io.StringIO
) -> None:
    client, _ = demo
    page = "/problems/not-found"
    generated = client.get(page).headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    unsafe = client.get(page, headers={"X-Request-ID": "x" * 500}).headers["X-Request-ID"]
    assert unsafe != "x" * 500 and re.fullmatch(r"[0-9a-f]{32}", unsafe)
    ids = [r["request_id"] for r in _records(log_lines)]
    assert ids == [generated, unsafe]


def test_error_responses_carry_the_request_id(demo: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = demo
    response = client.get("/v1/projects/prj_missing", headers={"X-Request-ID": "r-404"})
    assert response.status_code == 401
    assert response.headers["X-Request-ID"] == "r-404"


def test_latency_histograms_are_per_route_template(
    demo: tuple[TestClient, dict[str, str]],
) -> None:
    client, keys = demo
    operator = {"Authorization": f"Bearer {next(v for k, v in keys.items() if 'operator' in k)}"}
    projects = client.get("/v1/projects", headers=operator).json()["items"]
    for project in projects[:3]:
        assert client.get(f"/v1/projects/{project['id']}", headers=operator).status_code == 200
    client.get("/no/such/path")
    text = client.get("/metrics").text
    template = 'route="/v1/projects/{project_id}"'
    buckets = [line for line in text.splitlines() if line.startswith("cdmo_http_request_duration")]
    count = next(line for line in buckets if "_count" in line and template in line)
    assert float(count.rsplit(" ", 1)[1]) == 3.0
    assert any('route="unmatched"' in line for line in buckets)
    labels = " ".join(re.findall(r'route="([^"]*)"', text))
    assert not any(project["id"] in labels for project in projects), "raw ids in labels"


def test_probes_log_at_debug_and_server_errors_at_error(
    demo: tuple[TestClient, dict[str, str]], log_lines: io.StringIO
) -> None:
    client, _ = demo
    app = client.app

    @app.get("/_test/boom", include_in_schema=False)  # type: ignore[attr-defined]
    def boom() -> None:
        raise RuntimeError("boom")

    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 200
    client.get("/problems/not-found")
    with pytest.raises(RuntimeError):
        client.get("/_test/boom")
    access = [r for r in _records(log_lines) if r["event"] == "request"]
    assert [(r["route"], r["level"]) for r in access] == [
        ("/problems/{slug}", "info"),
        ("/_test/boom", "error"),
    ]
    configure_logging("DEBUG", "json", stream=log_lines)
    client.get("/health")
    assert _records(log_lines)[-1]["route"] == "/health"
