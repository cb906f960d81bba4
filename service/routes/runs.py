"""Match runs (operators only): submit, watch, cancel, read the answer, replay.

Thin: checks and the transaction here, the lifecycle in :mod:`service.repositories.runs`,
the work in the worker (:mod:`service.flows.match_run`), never in this process.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from schemas.api import (
    FINAL_RUN_STATUSES,
    Page,
    RunAssignment,
    RunCreate,
    RunPlacementsByCdmo,
    RunPublic,
    RunStatus,
    RunUnassigned,
)
from service import repositories as repo
from service.auth import Principal
from service.deps import ID_PATTERN, CurrentOrg, OperatorOrg, PageDep, ServicesDep, SessionDep
from service.errors import InvalidFieldError, InvalidStateError, NotFoundError, TooManyRunsError
from service.idempotency import IdempotencyDep
from service.models import MatchRun
from service.openapi import problems
from service.runtime import Services
from service.transactions import Transaction, Tx

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/match-runs", tags=["match runs"])

KEEPALIVE_S = 15.0


def _operator_or_404(principal: CurrentOrg) -> Principal:
    """Runs do not exist for makers and CDMOs (404, like another tenant's resource)."""
    if not principal.is_operator:
        raise NotFoundError("no such resource")
    return principal


RunsReader = Annotated[Principal, Depends(_operator_or_404)]


def load_run(
    run_id: Annotated[str, Path(pattern=ID_PATTERN)], session: SessionDep, principal: RunsReader
) -> MatchRun:
    return repo.runs.get_run(session=session, principal=principal, run_id=run_id)


RunDep = Annotated[MatchRun, Depends(load_run)]


def _admit(services: Services, session: SessionDep, run_in: RunCreate) -> None:
    """Limits and an empty scope: each a problem, before anything is written."""
    cfg = services.settings.runs
    if run_in.params.time_limit_s > cfg.max_time_limit_s:
        raise InvalidFieldError(
            "params.time_limit_s",
            f"at most {cfg.max_time_limit_s:g} s on this deployment",
            code="time_limit_too_large",
        )
    repo.runs.lock_admission(session=session)
    active = repo.runs.count_active(session=session)
    if active >= cfg.max_active_runs:
        raise TooManyRunsError(
            f"{active} runs are queued or running (the cap is {cfg.max_active_runs}); "
            "retry when one finishes",
            headers={"Retry-After": "10"},
        )


def _submit(services: Services, run: MatchRun) -> None:
    assert services.jobs is not None
    try:
        services.jobs.submit(run.id)
    except Exception:  # noqa: BLE001 - the run is queued in the database: the reaper re-sends
        log.warning("could not send the run to the queue yet", extra={"run_id": run.id})


def _accepted(tx: Transaction, services: Services, run: MatchRun) -> Response:
    """Commit the queued run (with the idempotency record), then send it to the queue."""
    response = tx.respond(
        repo.runs.to_public(tx.session, run),
        status_code=202,
        headers={"Location": f"/v1/match-runs/{run.id}"},
    )
    log.info("run queued", extra={"run_id": run.id})
    _submit(services, run)
    return response


@router.post(
    "",
    status_code=202,
    summary="Start a match run (operators): 202 with the queued run and its Location",
    responses=problems(403, 413, 415, 422, 429),
    response_model=RunPublic,
    dependencies=[IdempotencyDep],
)
def create_run(
    run_in: RunCreate, tx: Tx, principal: OperatorOrg, services: ServicesDep
) -> Response:
    session = tx.session
    _admit(services, session, run_in)
    if repo.runs.count_in_scope(session=session, scope=run_in.scope) == 0:
        raise InvalidFieldError("scope", "selects no open project", code="empty_scope")
    run = repo.runs.create_run(session=session, run_in=run_in, created_by=principal.org_id)
    return _accepted(tx, services, run)


@router.get("", summary="Match runs, newest first (operators)", responses=problems(404, 422))
def list_runs(
    session: SessionDep,
    _principal: RunsReader,
    page: PageDep,
    status: RunStatus | None = None,
) -> Page[RunPublic]:
    rows, cursor = repo.runs.list_runs(session=session, status=status, page=page)
    return Page(
        items=[repo.runs.to_public(session, r, audit=False) for r in rows], next_cursor=cursor
    )


@router.get(
    "/{run_id}",
    summary="One run: status, progress while it runs, summary when done, audit",
    responses=problems(404, 422),
)
def get_run(run: RunDep, session: SessionDep) -> RunPublic:
    return repo.runs.to_public(session, run)


@router.post(
    "/{run_id}/cancel",
    status_code=202,
    summary="Cancel: a queued run at once; a running one stops within about a second and "
    "keeps its best verified answer (partial), committing nothing",
    responses=problems(404, 409, 422),
    response_model=RunPublic,
)
def cancel_run(run: RunDep, tx: Tx, services: ServicesDep) -> Response:
    run = repo.runs.request_cancel(session=tx.session, run=run)
    response = tx.respond(repo.runs.to_public(tx.session, run), status_code=202)
    services.events.publish(run.id, "status", {"cancel_requested": True, "status": run.status})
    return response


@router.post(
    "/{run_id}/replay",
    status_code=202,
    summary="Solve the run's stored snapshot again with its parameters (a new dry run); "
    "a deterministic run replays to the identical answer",
    responses=problems(404, 409, 422, 429),
    response_model=RunPublic,
    dependencies=[IdempotencyDep],
)
def replay_run(run: RunDep, tx: Tx, principal: OperatorOrg, services: ServicesDep) -> Response:
    session = tx.session
    if run.snapshot_pruned:
        raise InvalidStateError(f"the snapshot of run {run.id} was pruned; it cannot be replayed")
    if run.snapshot_gz is None:
        raise InvalidStateError(f"run {run.id} has no stored snapshot yet ({run.status})")
    from schemas.api import RunScope
    from schemas.market import RunParams

    replay_in = RunCreate(
        scope=RunScope.model_validate(run.scope),
        params=RunParams.model_validate(run.params),
        dry_run=True,
    )
    _admit(services, session, replay_in)
    new = repo.runs.create_run(
        session=session, run_in=replay_in, created_by=principal.org_id, replay_of=run.id
    )
    return _accepted(tx, services, new)


@router.get(
    "/{run_id}/assignments",
    summary="The run's placements (paged), with what the commit did with each",
    responses=problems(404, 422),
)
def list_assignments(run: RunDep, session: SessionDep, page: PageDep) -> Page[RunAssignment]:
    rows, cursor = repo.runs.list_assignments(session=session, run_id=run.id, page=page)
    return Page(items=rows, next_cursor=cursor)


@router.get(
    "/{run_id}/placements-by-cdmo",
    summary="Projects placed per CDMO (primary and second source) and their value, most "
    "placements first: the dashboard's chart without paging every assignment",
    responses=problems(404, 422),
)
def placements_by_cdmo(run: RunDep, session: SessionDep) -> RunPlacementsByCdmo:
    return RunPlacementsByCdmo(
        run_id=run.id, items=repo.runs.placements_by_cdmo(session=session, run_id=run.id)
    )


@router.get(
    "/{run_id}/unassigned",
    summary="Projects the run could not place (paged), with the reason",
    responses=problems(404, 422),
)
def list_unassigned(run: RunDep, session: SessionDep, page: PageDep) -> Page[RunUnassigned]:
    rows, cursor = repo.runs.list_unassigned(session=session, run_id=run.id, page=page)
    return Page(items=rows, next_cursor=cursor)


def _sse(event_id: str, kind: str, data: object) -> str:
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@router.get(
    "/{run_id}/events",
    summary="Progress as server-sent events; resumable with Last-Event-ID; the stream ends "
    "with a `final` event carrying the whole run",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {"example": "event: progress\ndata: {...}"}}},
        **problems(404, 422),
    },
)
def run_events(
    run_id: Annotated[str, Path(pattern=ID_PATTERN)],
    principal: RunsReader,
    services: ServicesDep,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", max_length=64, description="Resume after it.")
    ] = None,
) -> StreamingResponse:
    with services.db.session(write=False) as session:  # not the request's: the stream is long
        repo.runs.get_run(session=session, principal=principal, run_id=run_id)
    channel = services.events
    after = last_event_id
    if after is not None and after != "final" and not channel.valid_id(after):
        raise InvalidFieldError(
            "Last-Event-ID", "not an event id of this stream", location="header"
        )

    def current() -> RunPublic | None:
        with services.db.session(write=False) as session:
            row = repo.runs.load(session, run_id)
            return repo.runs.to_public(session, row) if row is not None else None

    def read(last: str | None) -> list[object]:
        try:
            return list(channel.read(run_id, last, 1.0))
        except Exception:  # noqa: BLE001 - Redis away: the database still tells the end
            import time

            time.sleep(1.0)
            return []

    async def stream() -> AsyncIterator[str]:
        last = None if after == "final" else after
        quiet = 0.0
        yield "retry: 2000\n\n"
        while True:
            done = await run_in_threadpool(current)
            final = done is None or done.status in FINAL_RUN_STATUSES
            if after != "final":
                events = await run_in_threadpool(read, last)
                for event in events:
                    last = event.id  # type: ignore[attr-defined]
                    yield _sse(event.id, event.kind, event.data)  # type: ignore[attr-defined]
                quiet = 0.0 if events else quiet + 1.0
            else:
                await asyncio.sleep(0)
            if final:
                body = done.model_dump(mode="json") if done is not None else {"id": run_id}
                yield _sse("final", "final", body)
                return
            if quiet >= KEEPALIVE_S:
                quiet = 0.0
                yield ": keep-alive\n\n"

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
