"""Liveness, readiness, metrics and the problem-type pages (no authentication)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from schemas.api import Health, Readiness, WorkersSeen
from service.deps import ServicesDep
from service.errors import PROBLEM_TYPES, NotFoundError
from service.jobs.workers import WorkerRegistry
from service.openapi import problems
from service.runtime import Services

log = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])


# Both probes are coroutines: they need no thread of the request pool, no request slot and
# no pooled connection, so they answer while the API is saturated. /ready checks on a
# connection of its own, in asyncio's executor (not the request threads).


@router.get("/health", summary="Liveness: the process answers")
async def health() -> Health:
    return Health()


@router.get(
    "/ready",
    summary="Readiness: database reachable and migrated, key-value store reachable; workers "
    "seen recently (informational: no worker does not make the API unready)",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A backing service is down."}},
)
async def ready(services: ServicesDep) -> Response:
    db_ok = store_ok = migrated = False
    try:
        migrated = await asyncio.to_thread(services.db.ping) is not None
        db_ok = True
    except Exception:  # readiness reports failure, it does not raise it
        log.warning("readiness: database check failed", exc_info=True)
    try:
        store_ok = await asyncio.to_thread(services.store.ping)
    except Exception:
        log.warning("readiness: store check failed", exc_info=True)
    ok = db_ok and store_ok and migrated
    body = Readiness(
        status="ready" if ok else "unavailable",
        database=services.db.dialect if db_ok else "unreachable",
        store=services.store.kind if store_ok else "unreachable",
        migrated=migrated,
        workers=await asyncio.to_thread(_workers_seen, services),
    )
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


def _workers_seen(services: Services) -> WorkersSeen:
    """Workers that beat recently. The API serves without them (runs wait, queued), so the
    count is reported, never a reason to be unready."""
    cfg = services.settings.runs
    jobs = services.jobs
    if jobs is None:
        return WorkersSeen(engine="none", seen=0, window_s=cfg.worker_seen_s)
    if jobs.kind == "local":  # no Redis: the API's own pool runs the jobs
        return WorkersSeen(engine="local", seen=cfg.local_workers, window_s=cfg.worker_seen_s)
    client = getattr(services.store, "client", None)
    seen: int | None = None
    if client is not None:
        try:
            registry = WorkerRegistry(client, prefix=services.settings.redis.key_prefix)
            seen = len(registry.seen(cfg.worker_seen_s))
        except Exception:  # noqa: BLE001 - reported as unknown, like the store itself
            log.warning("readiness: could not read worker heartbeats", exc_info=True)
    return WorkersSeen(engine="dramatiq", seen=seen, window_s=cfg.worker_seen_s)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"example": "cdmo_http_requests_total{...} 42"}}}},
)
def metrics(services: ServicesDep) -> Response:
    if not services.settings.http.expose_metrics:
        raise NotFoundError("metrics are disabled")
    return Response(services.metrics.render(), media_type="text/plain; version=0.0.4")


@router.get(
    "/problems/{slug}",
    summary="What a problem `type` means",
    responses={
        200: {
            "content": {
                "application/json": {
                    "example": {
                        "type": "/problems/precondition-failed",
                        "title": "Precondition failed",
                        "status": 412,
                        "description": "If-Match does not match the current version.",
                    }
                }
            }
        },
        **problems(404, 422, auth=False),
    },
)
def problem_type(slug: str) -> dict[str, object]:
    ptype = PROBLEM_TYPES.get(slug)
    if ptype is None:
        raise NotFoundError(f"no problem type {slug}")
    return {
        "type": ptype.uri,
        "title": ptype.title,
        "status": ptype.status,
        "description": ptype.description,
    }
