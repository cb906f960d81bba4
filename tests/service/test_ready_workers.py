"""/ready reports the workers seen recently, as a field: no worker never makes the API unready
(it serves without them; runs wait, queued).

* embedded (no REDIS_URL): the API's own local pool counts as its workers;
* PostgreSQL + Redis: each ``cdmo worker`` beats every second into Redis; a real worker
  process is started here, seen, stopped (SIGTERM: it leaves), and a stale beat is not counted.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from runs_testkit import Workers, fast_runs_settings, wait_until, worker_env
from service_testkit import PgAdmin, make_settings

from service.app import create_app
from service.config import RunsSettings
from service.db import upgrade
from service.jobs.workers import WorkerRegistry
from service.runtime import build_services


def _client(settings: Any) -> TestClient:
    services = build_services(settings)
    upgrade(services.db.engine)
    return TestClient(create_app(settings, services))


def _ready(client: TestClient) -> dict[str, Any]:
    response = client.get("/ready")
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_embedded_the_local_pool_counts_as_the_workers(tmp_path: Path) -> None:
    settings = make_settings(
        f"sqlite:///{tmp_path / 'ready.db'}",
        None,
        tmp_path,
        "x:",
        runs=RunsSettings(**fast_runs_settings(local_workers=2)),
    )
    with _client(settings) as client:
        body = _ready(client)
    assert body["status"] == "ready"
    assert body["workers"] == {
        "engine": "local",
        "seen": 2,
        "window_s": settings.runs.worker_seen_s,
    }


@pytest.fixture()
def services(
    pg_admin: PgAdmin, redis_url: str, worker_id: str, tmp_path: Path
) -> Iterator[tuple[Any, str, str]]:
    db_url = pg_admin.create_database(f"ready{worker_id}")
    prefix = f"cdmo-test:ready:{uuid.uuid4().hex[:8]}:"
    settings = make_settings(
        db_url, redis_url, tmp_path, prefix, runs=RunsSettings(**fast_runs_settings())
    )
    try:
        yield settings, db_url, prefix
    finally:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=prefix + "*", count=500))
        if keys:
            client.delete(*keys)
        client.close()


def test_no_worker_is_reported_but_the_api_stays_ready(
    services: tuple[Any, str, str], redis_url: str
) -> None:
    settings, _db_url, prefix = services
    registry = WorkerRegistry(redis.Redis.from_url(redis_url), prefix=prefix)
    window = settings.runs.worker_seen_s
    with _client(settings) as client:
        body = _ready(client)
        assert body["status"] == "ready"
        assert body["workers"] == {"engine": "dramatiq", "seen": 0, "window_s": window}
        # A beat inside the window counts; one older than it does not.
        registry.beat("host-a:1")
        registry.beat("host-b:2", now=time.time() - window - 5)
        assert _ready(client)["workers"]["seen"] == 1
        assert registry.seen(window) == ["host-a:1"]


def test_a_real_worker_is_seen_while_it_runs_and_not_after_it_stops(
    services: tuple[Any, str, str], redis_url: str, tmp_path: Path
) -> None:
    settings, db_url, prefix = services
    workers = Workers(worker_env(db_url, redis_url, prefix), tmp_path)
    with _client(settings) as client:
        workers.start(1)
        try:
            wait_until(lambda: _ready(client)["workers"]["seen"] == 1, 90, "the worker's heartbeat")
        except AssertionError:
            raise AssertionError(workers.logs()) from None
        finally:
            workers.stop()
        body = _ready(client)
        assert body["status"] == "ready"
        assert body["workers"]["seen"] == 0  # it left on SIGTERM
