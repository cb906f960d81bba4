"""Fixtures of the service tests.

Every API test runs once per backend:

* ``embedded``: SQLite file + in-process store (what ``make run`` uses);
* ``services``: PostgreSQL (``DATABASE_URL``) + Redis (``REDIS_URL``), real servers.

Without those variables the ``services`` runs skip with a reason; with ``REQUIRE_SERVICES=1``
they fail instead. Each xdist worker gets its own PostgreSQL database (created and dropped
here) and its own Redis key prefix; each test starts from empty tables and its own prefix.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from service_testkit import (
    BACKENDS,
    Api,
    Backend,
    PgAdmin,
    engine_housekeeping,
    open_backend,
    unavailable,
)
from sqlalchemy.engine import make_url

from service.app import create_app
from service.config import normalise_database_url


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if not url:
        unavailable("DATABASE_URL is not set: PostgreSQL tests skipped")
    assert url is not None
    url = normalise_database_url(url)
    if not url.startswith("postgresql"):
        unavailable(f"DATABASE_URL is not PostgreSQL ({make_url(url).get_backend_name()})")
    return url


@pytest.fixture(scope="session")
def pg_admin(pg_server_url: str) -> Iterator[PgAdmin]:
    admin = PgAdmin(pg_server_url)
    yield admin
    admin.drop_all()


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if not url:
        unavailable("REDIS_URL is not set: Redis tests skipped")
    assert url is not None
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable(f"Redis at {url} is unreachable: {exc}")
    finally:
        client.close()
    return url


@pytest.fixture(scope="session")
def key_prefix(worker_id: str) -> Iterator[str]:
    """This worker's Redis namespace; every key under it is deleted at the end."""
    prefix = f"cdmo-test:{worker_id}:{uuid.uuid4().hex[:8]}:"
    yield prefix
    url = os.environ.get("REDIS_URL")
    if url:
        try:
            client = redis.Redis.from_url(url, socket_connect_timeout=2)
            keys = list(client.scan_iter(match=prefix + "*", count=500))
            if keys:
                client.delete(*keys)
            client.close()
        except redis.RedisError:
            pass


@pytest.fixture(scope="session", params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, key_prefix: str
) -> Iterator[Backend]:
    tmp = tmp_path_factory.mktemp(f"backend-{request.param}")
    settings, services = open_backend(request, request.param, tmp, key_prefix)
    app = create_app(settings, services)
    with TestClient(app) as client, engine_housekeeping(settings, services):
        yield Backend(request.param, settings, services, client, key_prefix)


@pytest.fixture
def api(backend: Backend) -> Iterator[Api]:
    backend.reset()
    yield Api(backend)
