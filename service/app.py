"""The FastAPI application factory."""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from anyio import to_thread
from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline

from service import housekeeping
from service.config import Settings, get_settings
from service.deps import reject_nul_characters
from service.docs import STATIC_URL, install_redoc
from service.errors import install_error_handlers
from service.flows.match_run import warm_up
from service.hotpath import HotPath
from service.idempotency import install_idempotency
from service.jobs.engine import DramatiqEngine, make_job_engine
from service.jobs.reaper import Reaper, runs_state
from service.metrics import MetricsMiddleware
from service.middleware import AuthenticationMiddleware, BodyLimitMiddleware
from service.observability import RequestContextMiddleware, configure_logging
from service.openapi import build_openapi, operation_id
from service.routes import (
    candidates,
    dashboard,
    deals,
    explanations,
    health,
    listings,
    market,
    orgs,
    projects,
    proposals,
    runs,
    sites,
)
from service.runtime import Services, build_services

DESCRIPTION = """
A marketplace where medical-device makers post project needs and CDMOs post sites,
certifications and monthly capacity; an optimiser proposes CDMO sites for projects.

* **Auth**: `Authorization: Bearer <API key>`; keys belong to an organisation
  (maker, cdmo or operator).
* **Visibility**: a maker sees its own projects; a CDMO its own sites and listings, and a
  project (redacted) only while it is proposed to it; operators see everything. Resources of
  another tenant answer 404.
* **Concurrency**: reads return an `ETag`; PUT/PATCH need `If-Match` (428 without, 412 if
  stale).
* **Retries**: POSTs accept an `Idempotency-Key`; a retry returns the first response.
* **Errors**: RFC 9457 `application/problem+json` with a stable `type` (see `/problems/{slug}`).
"""

TAGS: list[dict[str, Any]] = [
    {"name": "projects", "description": "Makers' project needs."},
    {"name": "sites", "description": "CDMO sites, certifications, processes, quality."},
    {"name": "listings", "description": "Free capacity per site, process and month."},
    {"name": "proposals", "description": "Projects proposed to CDMO sites."},
    {"name": "market", "description": "The snapshot the optimiser consumes."},
    {"name": "candidates", "description": "Instant quotes: where a project could go now."},
    {"name": "organisations", "description": "Tenants and their API keys."},
    {"name": "match runs", "description": "The optimiser run as a job (operators)."},
    {"name": "operations", "description": "Health, readiness, metrics, problem types."},
]


def _warm_up_then_freeze() -> None:
    """Warm the matcher, then move every object alive (modules, compiled kernels, the app) out
    of the garbage collector's reach: a full collection no longer walks them, which made about
    one request in a hundred wait ~150 ms under load (p95 31 ms, p99 170 ms before)."""
    warm_up()
    gc.collect()  # garbage left by start-up is freed, not frozen for the life of the process
    gc.freeze()


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    settings = settings or get_settings()
    services = services or build_services(settings)
    configure_logging(settings.log_level, settings.log_format)
    if services.jobs is None:
        services.jobs = make_job_engine(settings)
    jobs = services.jobs
    services.metrics.watch_runs(lambda: runs_state(services.db))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Every request holding a database slot needs at most one thread at a time, so
        # threads never run out before slots do (the remainder serves non-database work).
        limiter = to_thread.current_default_thread_limiter()
        limiter.total_tokens = max(limiter.total_tokens, services.db.slots.size + 8)
        # A request thread back from PostgreSQL needs the GIL to hand its answer to the loop;
        # with Python's 5 ms switch interval it waited behind a busy loop for that long, holding
        # its database slot (README "Under load").
        sys.setswitchinterval(settings.http.gil_switch_interval_s)
        services.auth.start()
        # Warm the matcher here too, beside serving (the API never solves: nothing waits for
        # it); start the local pool (embedded mode, its processes warm up themselves) and a
        # reaper.
        threading.Thread(target=_warm_up_then_freeze, name="matcher-warm-up", daemon=True).start()
        start = getattr(jobs, "start", None)
        if start is not None:
            start()
        reaper = Reaper(services.db, jobs, services.events, settings).start()
        # Expiry and webhooks: jobs of the engine with Redis (`cdmo scheduler` + workers;
        # this process only kicks delivery of the events it commits), the same sweeps on a
        # clock in this process when embedded.
        background: Any = (
            housekeeping.announcer(settings, jobs)
            if isinstance(jobs, DramatiqEngine)
            else housekeeping.Housekeeper(services.db, settings)
        )
        if background is not None:
            background.start()
        yield
        if background is not None:
            background.stop()
        reaper.stop()
        await services.db.reads.close()
        if services.db.raw is not None:
            await services.db.raw.close()
        services.close()

    # FastAPIOffline: /docs loads Swagger UI from the package's own copy under /static/docs,
    # never from a CDN (users behind firewalls, machines without internet); /redoc: docs.py.
    app = FastAPIOffline(
        static_url=STATIC_URL,
        redoc_url=None,
        generate_unique_id_function=operation_id,
        title="CDMO capacity marketplace",
        version="0.1.0",
        summary="Match medical-device projects to CDMO capacity.",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        dependencies=[Depends(reject_nul_characters)],
    )
    app.state.services = services
    install_redoc(app)
    install_error_handlers(app)
    for module in (
        projects,
        sites,
        listings,
        proposals,
        deals,
        market,
        runs,
        explanations,
        orgs,
        health,
        candidates,
        dashboard,
    ):
        app.include_router(module.router)
    # Added last = outermost: the request id is bound first, metrics see everything, the body
    # limit and authentication run before any parsing.
    install_idempotency(app)
    app.add_middleware(AuthenticationMiddleware, services=services)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.http.max_body_bytes,
        timeout_s=settings.http.body_timeout_s,
    )
    app.add_middleware(MetricsMiddleware, metrics=services.metrics)
    app.add_middleware(RequestContextMiddleware)  # every line has the request id
    if settings.http.lean_path and services.db.raw is not None:
        app.add_middleware(HotPath, services=services)  # outermost: hands over what it skips
    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]
    return app
