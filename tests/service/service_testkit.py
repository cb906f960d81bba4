"""Helpers of the service tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from schemas.api import OrganisationCreate, OrgKind
from service import housekeeping
from service import repositories as repo
from service.config import DatabaseSettings, RateLimitSettings, RedisSettings, Settings
from service.db import upgrade
from service.jobs.engine import DramatiqEngine
from service.runtime import Services, build_services
from service.store import MemoryStore, RedisStore

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"
BACKENDS = ["embedded", "services"]
TABLES = [
    "webhook_deliveries",
    "org_events",
    "pair_rules",
    "idempotency_records",
    "proposals",
    "listings",
    "sites",
    "projects",
    "api_keys",
    "organisations",
]


def unavailable(reason: str) -> None:
    """Skip, or fail when the run promised real services (REQUIRE_SERVICES=1)."""
    if REQUIRE_SERVICES:
        pytest.fail(f"REQUIRE_SERVICES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class PgAdmin:
    url: str
    created: list[str] = field(default_factory=list)

    def create_database(self, tag: str) -> str:
        name = f"cdmo_test_{tag}_{uuid.uuid4().hex[:8]}"
        engine = create_engine(self.url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        except OperationalError as exc:
            unavailable(f"PostgreSQL at {make_url(self.url).host} is unreachable: {exc}")
        finally:
            engine.dispose()
        self.created.append(name)
        return make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        if not self.created:
            return
        engine = create_engine(self.url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            for name in self.created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def make_settings(
    db_url: str, redis_url: str | None, data_dir: Path, prefix: str, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "env": "test",
        "database_url": db_url,
        "redis_url": redis_url,
        "data_dir": data_dir,
        "redis": RedisSettings(key_prefix=prefix),
        "rate_limit": RateLimitSettings(requests=100_000, window_s=3600),
        # a loaded CI machine must not shed the tests' own concurrent requests
        "db": DatabaseSettings(queue_timeout_s=10, queue_budget_s=0),
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Backend:
    name: str
    settings: Settings
    services: Services
    client: TestClient
    base_prefix: str

    @property
    def db(self):  # type: ignore[no-untyped-def]
        return self.services.db

    def reset(self) -> None:
        """Empty every table and give the store a fresh namespace."""
        with self.db.engine.begin() as conn:
            if self.db.dialect == "postgresql":
                conn.execute(text(f"TRUNCATE {', '.join(TABLES)} CASCADE"))
            else:
                for table in TABLES:
                    conn.execute(text(f"DELETE FROM {table}"))
            conn.execute(text("UPDATE market_state SET version = 0, supply_version = 0"))
        store = self.services.store
        if isinstance(store, RedisStore):
            store.prefix = f"{self.base_prefix}{uuid.uuid4().hex[:8]}:"
        elif isinstance(store, MemoryStore):
            store.close()
        self.services.auth.clear()


@contextmanager
def engine_housekeeping(settings: Settings, services: Services) -> Iterator[None]:
    """With Redis, what a deployment's ``cdmo scheduler`` and workers do for housekeeping
    (expiry, webhook deliveries), here in the test process; embedded, the app does it."""
    engine = services.jobs
    if not isinstance(engine, DramatiqEngine):
        yield
        return
    sweeps = housekeeping.install(engine, services.db, settings)
    consumer = engine.housekeeping_worker(1)
    consumer.start()
    clock = housekeeping.scheduler(settings, engine).start()
    try:
        yield
    finally:
        clock.stop()
        consumer.stop(timeout=10_000)
        sweeps.close()


def open_backend(
    request: pytest.FixtureRequest, name: str, tmp: Path, prefix: str, **overrides: Any
) -> tuple[Settings, Services]:
    if name == "embedded":
        db_url, store_url = f"sqlite:///{tmp / 'test.db'}", None
    else:
        admin: PgAdmin = request.getfixturevalue("pg_admin")
        store_url = request.getfixturevalue("redis_url")
        db_url = admin.create_database(request.getfixturevalue("worker_id"))
    settings = make_settings(db_url, store_url, tmp, prefix, **overrides)
    services = build_services(settings)
    upgrade(services.db.engine)
    return settings, services


@dataclass
class Tenant:
    """An organisation and an HTTP client that sends its key."""

    id: str
    kind: str
    name: str
    key: str
    client: TestClient

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.key}", **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("PUT", path, **kw)

    def patch(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", path, **kw)


def ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    return response.json() if response.content else {}


def site_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Suzhou plant",
        "country": "CN",
        "region": "CN",
        "certifications": [
            {
                "kind": "iso_13485",
                "issuer": "TUV SUD",
                "device_classes": ["II", "III"],
                "valid_from": "2025-01-01",
                "valid_until": "2029-12-31",
            },
        ],
        "processes": ["catheter_assembly", "eo_sterilisation", "final_test"],
        "categories": ["implantable_interventional"],
        "device_classes": ["II", "III"],
        "quality": {"inspection_findings": 1, "on_time_rate": 0.97},
    }
    body.update(overrides)
    return body


def project_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": "Balloon catheter",
        "category": "implantable_interventional",
        "device_class": "III",
        "target_markets": ["CN", "EU"],
        "required_certifications": ["iso_13485"],
        "window_start": "2027-01",
        "window_end": "2027-03",
        "loads": [{"process": "catheter_assembly", "monthly_hours": [100, 120, 140]}],
        "stage": "pilot",
        "priority": 7,
        "budget_ceiling": 250000,
    }
    body.update(overrides)
    return body


def listing_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "process": "catheter_assembly",
        "month": "2027-01",
        "capacity_hours": 500,
        "reserved_hours": 50,
        "price_per_hour": 80,
    }
    body.update(overrides)
    return body


class Api:
    """The test's handle on one backend: tenants and small factories, all through HTTP."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.client = backend.client
        self._operator: Tenant | None = None
        self._n = 0

    @property
    def operator(self) -> Tenant:
        if self._operator is None:
            secret = self.backend.settings.auth.hmac_secret.get_secret_value()
            with self.backend.db.session() as session:
                org = repo.orgs.create_org(
                    session=session,
                    org_in=OrganisationCreate(name="Test operator", kind=OrgKind.OPERATOR),
                )
                _, key = repo.orgs.create_api_key(
                    session=session, org=org, label="t", secret=secret
                )
                session.commit()
            self._operator = Tenant(org.id, "operator", org.name, key, self.client)
        return self._operator

    def tenant(self, kind: str, name: str | None = None) -> Tenant:
        self._n += 1
        name = name or f"{kind} {self._n}"
        org = ok(self.operator.post("/v1/orgs", json={"name": name, "kind": kind}), 201)
        key = ok(self.operator.post(f"/v1/orgs/{org['id']}/keys", json={"label": "t"}), 201)
        return Tenant(org["id"], kind, name, key["key"], self.client)

    def maker(self, name: str | None = None) -> Tenant:
        return self.tenant("maker", name)

    def cdmo(self, name: str | None = None) -> Tenant:
        return self.tenant("cdmo", name)

    def site(self, cdmo: Tenant, **overrides: Any) -> dict[str, Any]:
        return ok(cdmo.post("/v1/sites", json=site_body(**overrides)), 201)

    def project(self, maker: Tenant, **overrides: Any) -> dict[str, Any]:
        return ok(maker.post("/v1/projects", json=project_body(**overrides)), 201)

    def listing(self, cdmo: Tenant, site_id: str, **overrides: Any) -> dict[str, Any]:
        return ok(cdmo.post(f"/v1/sites/{site_id}/listings", json=listing_body(**overrides)), 201)

    def propose(self, project_id: str, site_id: str, role: str = "primary") -> dict[str, Any]:
        body = {"project_id": project_id, "site_id": site_id, "role": role}
        return ok(self.operator.post("/v1/proposals", json=body), 201)

    def market_version(self) -> int:
        return int(ok(self.operator.get("/v1/market/version"))["version"])


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem of this status and type."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json"), (
        response.headers["content-type"]
    )
    body = response.json()
    assert body["type"] == f"/problems/{slug}", body
    assert body["status"] == status
    assert body["title"] and body["detail"]
    return body
