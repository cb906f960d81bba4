"""Match runs in PostgreSQL (or the embedded SQLite): lifecycle, progress, results, reaping.

No function here commits: the caller (a route, or a flow step) owns the transaction. Every
write a worker makes after claiming a run names its claim token (``worker_id``): a worker the
reaper gave up on, and that comes back, updates no row and learns that it lost the run.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import case, delete, func, or_, update
from sqlmodel import Session, col, select

from schemas.api import (
    ACTIVE_RUN_STATUSES,
    FINAL_RUN_STATUSES,
    CdmoPlacements,
    RunAssignment,
    RunAudit,
    RunCreate,
    RunProgress,
    RunPublic,
    RunScope,
    RunStatus,
    RunSummary,
    RunUnassigned,
)
from schemas.market import RunParams
from service.auth import Principal
from service.errors import InvalidStateError, NotFoundError
from service.ids import new_id
from service.models import MatchRun, MatchRunAssignment, MatchRunUnassigned, utcnow
from service.notifications import outbox
from service.pagination import PageParams, encode_cursor, paginate
from service.repositories.bulk import copy_rows

_ACTIVE = [s.value for s in ACTIVE_RUN_STATUSES]
_FINAL = [s.value for s in FINAL_RUN_STATUSES]


class LostClaim(Exception):  # noqa: N818 - a control-flow signal
    """The run was reaped and re-queued (or cancelled) while this worker held it."""


# --- requests (routes) ----------------------------------------------------------------------


def count_active(*, session: Session) -> int:
    stmt = select(func.count()).select_from(MatchRun).where(col(MatchRun.status).in_(_ACTIVE))
    return int(session.exec(stmt).one())


def create_run(
    *,
    session: Session,
    run_in: RunCreate,
    created_by: str,
    replay_of: str | None = None,
) -> MatchRun:
    now = utcnow()
    run = MatchRun(
        id=new_id("run"),
        status=RunStatus.QUEUED.value,
        dry_run=run_in.dry_run,
        scope=run_in.scope.model_dump(mode="json"),
        params=run_in.params.model_dump(mode="json"),
        replay_of=replay_of,
        created_by=created_by,
        created_at=now,
        enqueued_at=now,
    )
    session.add(run)
    session.flush()
    return run


def get_run(*, session: Session, principal: Principal, run_id: str) -> MatchRun:
    """Operators only: to anyone else a run does not exist (404, nothing leaks)."""
    run = session.get(MatchRun, run_id) if principal.is_operator else None
    if run is None:
        raise NotFoundError(f"match run {run_id} not found")
    return run


def load(session: Session, run_id: str, *, for_update: bool = False) -> MatchRun | None:
    stmt = select(MatchRun).where(MatchRun.id == run_id)
    if for_update:
        stmt = stmt.with_for_update()
    return session.exec(stmt).first()


def list_runs(
    *, session: Session, status: RunStatus | None, page: PageParams
) -> tuple[list[MatchRun], str | None]:
    """Newest first (ids are time-ordered ULIDs)."""
    stmt = select(MatchRun)
    if status is not None:
        stmt = stmt.where(MatchRun.status == status.value)
    if page.after is not None:
        stmt = stmt.where(col(MatchRun.id) < page.after)
    rows = list(session.exec(stmt.order_by(col(MatchRun.id).desc()).limit(page.limit + 1)))
    cursor = None
    if len(rows) > page.limit:
        rows = rows[: page.limit]
        cursor = encode_cursor(rows[-1].id)
    return rows, cursor


def queue_position(session: Session, run: MatchRun) -> int | None:
    if run.status != RunStatus.QUEUED.value:
        return None
    stmt = (
        select(func.count())
        .select_from(MatchRun)
        .where(MatchRun.status == RunStatus.QUEUED.value, col(MatchRun.id) < run.id)
    )
    return int(session.exec(stmt).one())


def to_public(session: Session, run: MatchRun, *, audit: bool = True) -> RunPublic:
    return RunPublic(
        id=run.id,
        status=RunStatus(run.status),
        dry_run=run.dry_run,
        scope=RunScope.model_validate(run.scope),
        params=RunParams.model_validate(run.params),
        market_version=run.market_version,
        progress=RunProgress.model_validate(run.progress) if run.progress else None,
        summary=RunSummary.model_validate(run.summary) if run.summary else None,
        error=run.error,
        attempts=run.attempts,
        replay_of=run.replay_of,
        created_by=run.created_by,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        heartbeat_at=run.heartbeat_at,
        cancel_requested=run.cancel_requested,
        queue_position=queue_position(session, run),
        audit=RunAudit(
            snapshot_hash=run.snapshot_hash,
            snapshot_bytes=run.snapshot_bytes,
            snapshot_pruned=run.snapshot_pruned,
            versions={k: str(v) for k, v in (run.versions or {}).items()},
        )
        if audit
        else None,
    )


def request_cancel(*, session: Session, run: MatchRun) -> MatchRun:
    """A queued run is cancelled at once; a running one is asked to stop (its worker sees the
    flag within a heartbeat, stops the solver and keeps the best answer, marked partial)."""
    session.refresh(run, with_for_update=True)
    status = RunStatus(run.status)
    if status in FINAL_RUN_STATUSES:
        raise InvalidStateError(f"run {run.id} is already {status.value}; nothing to cancel")
    if status == RunStatus.COMMITTING:
        raise InvalidStateError(
            f"run {run.id} is committing its proposals and can no longer be cancelled"
        )
    run.cancel_requested = True
    if status == RunStatus.QUEUED:
        run.status = RunStatus.CANCELLED.value
        run.finished_at = utcnow()
        run.error = "cancelled before it started"
    session.add(run)
    session.flush()
    if status == RunStatus.QUEUED:
        record_finished(session, run.id)
    return run


# --- the worker's side ----------------------------------------------------------------------


def claim(*, session: Session, run_id: str, token: str) -> MatchRun | None:
    """Take a queued run: ``running`` (or ``committing`` when its answer was already persisted
    by an earlier attempt). None when another worker has it, or it is final or cancelled."""
    now = utcnow()
    result = session.execute(
        update(MatchRun)
        .where(
            col(MatchRun.id) == run_id,
            col(MatchRun.status) == RunStatus.QUEUED.value,
            col(MatchRun.cancel_requested).is_(False),
        )
        .values(
            status=case(
                (col(MatchRun.summary).is_(None), RunStatus.RUNNING.value),
                else_=RunStatus.COMMITTING.value,
            ),
            attempts=MatchRun.attempts + 1,
            worker_id=token,
            started_at=func.coalesce(MatchRun.started_at, now),
            heartbeat_at=now,
            error=None,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    run = load(session, run_id)
    if run is not None:
        session.refresh(run)
    return run


def _owned(run_id: str, token: str) -> Any:
    return (
        col(MatchRun.id) == run_id,
        col(MatchRun.worker_id) == token,
        col(MatchRun.status).in_([RunStatus.RUNNING.value, RunStatus.COMMITTING.value]),
    )


def _update_owned(session: Session, run_id: str, token: str, **values: Any) -> None:
    result = session.execute(
        update(MatchRun)
        .where(*_owned(run_id, token))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise LostClaim(run_id)


def record_finished(session: Session, run_id: str) -> None:
    """``run.finished`` to the organisation that started the run, written in the transaction
    that moves the run to its final state (one commit: both or neither). Every move to a
    final state calls it: :func:`persist_result`, :func:`finish`, a cancel before the start,
    the reaper's give-ups."""
    row = session.execute(
        select(  # type: ignore[call-overload]
            MatchRun.id,
            MatchRun.created_by,
            MatchRun.status,
            MatchRun.dry_run,
            MatchRun.summary,
            MatchRun.error,
        ).where(MatchRun.id == run_id)
    ).one()
    summary = row.summary or {}
    commit = summary.get("commit") or {}
    outbox.record(
        session,
        org_ids=[row.created_by],
        kind=outbox.EventKind.RUN_FINISHED,
        data={
            "run_id": row.id,
            "status": row.status,
            "dry_run": row.dry_run,
            "placed": summary.get("placed"),
            "unplaced": summary.get("unplaced"),
            "proposed": commit.get("proposed"),
            "error": row.error,
        },
    )


def heartbeat(*, session: Session, run_id: str, token: str) -> bool:
    """Refresh the heartbeat; returns whether a cancel was asked. Raises LostClaim."""
    _update_owned(session, run_id, token, heartbeat_at=utcnow())
    stmt = select(MatchRun.cancel_requested).where(MatchRun.id == run_id)
    return bool(session.exec(stmt).one())


def cancel_requested(*, session: Session, run_id: str) -> bool:
    """Whether a cancel was asked for ``run_id`` (polled between heartbeats)."""
    stmt = select(MatchRun.cancel_requested).where(MatchRun.id == run_id)
    return bool(session.exec(stmt).one_or_none())


def record_progress(*, session: Session, run_id: str, token: str, progress: RunProgress) -> None:
    _update_owned(
        session, run_id, token, progress=progress.model_dump(mode="json"), heartbeat_at=utcnow()
    )


def record_snapshot(
    *,
    session: Session,
    run_id: str,
    token: str,
    snapshot_gz: bytes,
    snapshot_hash: str,
    market_version: int,
    versions: dict[str, str],
) -> None:
    _update_owned(
        session,
        run_id,
        token,
        snapshot_gz=snapshot_gz,
        snapshot_hash=snapshot_hash,
        snapshot_bytes=len(snapshot_gz),
        market_version=market_version,
        versions=versions,
        heartbeat_at=utcnow(),
    )


def persist_result(
    *,
    session: Session,
    run_id: str,
    token: str,
    assignments: Sequence[dict[str, Any]],
    unassigned: Sequence[dict[str, Any]],
    summary: RunSummary,
    next_status: RunStatus,
) -> None:
    """Store the verified answer and the summary (bulk inserts) and move the run on: to
    ``committing``, or straight to its final status (dry run, cancelled)."""
    now = utcnow()
    values: dict[str, Any] = {
        "summary": summary.model_dump(mode="json"),
        "status": next_status.value,
        "heartbeat_at": now,
    }
    if next_status in FINAL_RUN_STATUSES:
        values["finished_at"] = now
    _update_owned(session, run_id, token, **values)
    if next_status in FINAL_RUN_STATUSES:
        record_finished(session, run_id)
    session.execute(delete(MatchRunAssignment).where(col(MatchRunAssignment.run_id) == run_id))
    session.execute(delete(MatchRunUnassigned).where(col(MatchRunUnassigned.run_id) == run_id))
    copy_rows(
        session,
        MatchRunAssignment,
        [{"run_id": run_id, "pos": f"{i:08d}", **a} for i, a in enumerate(assignments)],
    )
    copy_rows(
        session,
        MatchRunUnassigned,
        [{"run_id": run_id, "pos": f"{i:08d}", **u} for i, u in enumerate(unassigned)],
    )


def run_assignments(session: Session, run_id: str) -> list[Any]:
    """The run's placements in answer order, as plain rows (attribute access like the
    model's; a run of a whole market has ~20k of them)."""
    table = MatchRunAssignment.__table__  # type: ignore[attr-defined]
    stmt = table.select().where(table.c.run_id == run_id).order_by(table.c.pos)
    return list(session.execute(stmt))


def record_outcomes(
    session: Session,
    run_id: str,
    outcomes: Sequence[tuple[str, str, str | None]],
    *,
    default: str | None = None,
) -> None:
    """(pos, outcome, detail) for the assignments of the run: one UPDATE sets ``default`` on
    all of them, one executemany the others (most placements share the default)."""
    from sqlalchemy import bindparam

    table = MatchRunAssignment.__table__  # type: ignore[attr-defined]
    if default is not None:
        session.execute(
            update(table)
            .where(table.c.run_id == run_id)
            .values(outcome=default, detail=None)
            .execution_options(synchronize_session=False)
        )
        outcomes = [o for o in outcomes if o[1] != default or o[2] is not None]
    if not outcomes:
        return
    session.execute(
        update(table)
        .where(table.c.run_id == run_id, table.c.pos == bindparam("b_pos"))
        .values(outcome=bindparam("b_outcome"), detail=bindparam("b_detail"))
        .execution_options(synchronize_session=False),
        [{"b_pos": p, "b_outcome": o, "b_detail": d} for p, o, d in outcomes],
    )


def finish(
    *,
    session: Session,
    run_id: str,
    token: str,
    status: RunStatus,
    summary: RunSummary | None = None,
    error: str | None = None,
) -> None:
    values: dict[str, Any] = {"status": status.value, "finished_at": utcnow(), "error": error}
    if summary is not None:
        values["summary"] = summary.model_dump(mode="json")
    _update_owned(session, run_id, token, **values)
    record_finished(session, run_id)


# --- reading results -------------------------------------------------------------------------


ResultT = TypeVar("ResultT", bound=BaseModel)


def _result_rows(
    session: Session, table: Any, wire: type[ResultT], run_id: str, page: PageParams
) -> tuple[list[ResultT], str | None]:
    """One page of a run's stored result rows (assignments or unassigned), in answer order."""
    stmt = select(table).where(table.run_id == run_id)
    rows, cursor = paginate(session, stmt, col(table.pos), page)
    return [wire.model_validate(r[0], from_attributes=True) for r in rows], cursor


def list_assignments(
    *, session: Session, run_id: str, page: PageParams
) -> tuple[list[RunAssignment], str | None]:
    return _result_rows(session, MatchRunAssignment, RunAssignment, run_id, page)


def placements_by_cdmo(*, session: Session, run_id: str) -> list[CdmoPlacements]:
    """Projects placed per CDMO and role, in one grouped query (most primary first)."""
    stmt = (
        select(
            MatchRunAssignment.cdmo_id,
            MatchRunAssignment.role,
            func.count(func.distinct(MatchRunAssignment.project_id)),
            func.coalesce(func.sum(MatchRunAssignment.value), 0.0),
        )
        .where(col(MatchRunAssignment.run_id) == run_id)
        .group_by(col(MatchRunAssignment.cdmo_id), col(MatchRunAssignment.role))
    )
    per: dict[str, dict[str, Any]] = {}
    for cdmo_id, role, projects, value in session.exec(stmt).all():
        entry = per.setdefault(
            cdmo_id, {"cdmo_id": cdmo_id, "primary": 0, "second_source": 0, "value": 0.0}
        )
        entry["primary" if role == "primary" else "second_source"] += int(projects)
        entry["value"] += float(value)
    rows = sorted(per.values(), key=lambda e: (-e["primary"], -e["second_source"], e["cdmo_id"]))
    return [CdmoPlacements(**row) for row in rows]


def list_unassigned(
    *, session: Session, run_id: str, page: PageParams
) -> tuple[list[RunUnassigned], str | None]:
    return _result_rows(session, MatchRunUnassigned, RunUnassigned, run_id, page)


# --- operations: reaper, checks, pruning ------------------------------------------------------


@dataclass(frozen=True)
class ReapAction:
    run_id: str
    action: str  # "requeued", "resent" or "failed"
    reason: str


def reap(
    *,
    session: Session,
    heartbeat_timeout_s: float,
    requeue_after_s: float,
    max_attempts: int,
    now: dt.datetime | None = None,
) -> list[ReapAction]:
    """Find runs the queue may have lost and decide what to do; the caller commits, then
    re-sends the ``requeued``/``resent`` ones.

    * running or committing, heartbeat older than ``heartbeat_timeout_s``: its worker died
      (kill -9, lost machine). Back to ``queued`` for another attempt (the job is idempotent;
      an answer already persisted is committed, not solved again) or, after ``max_attempts``,
      ``failed`` with the reason. A cancel asked meanwhile makes it ``cancelled``.
    * queued and not (re-)sent for ``requeue_after_s``: the message may be gone (Redis lost
      its data): send it again. A duplicate delivery is harmless (claims are conditional).
    """
    now = now or utcnow()
    stale = now - dt.timedelta(seconds=heartbeat_timeout_s)
    waiting = now - dt.timedelta(seconds=requeue_after_s)
    stmt = (
        select(MatchRun)
        .where(
            or_(
                (col(MatchRun.status).in_([RunStatus.RUNNING.value, RunStatus.COMMITTING.value]))
                & (col(MatchRun.heartbeat_at) < stale),
                (col(MatchRun.status) == RunStatus.QUEUED.value)
                & (col(MatchRun.enqueued_at) < waiting),
            )
        )
        .order_by(col(MatchRun.id))
        .limit(100)
        .with_for_update(skip_locked=True)
    )
    actions = []
    for run in session.exec(stmt):
        if run.status == RunStatus.QUEUED.value:
            run.enqueued_at = now
            actions.append(ReapAction(run.id, "resent", "queued too long: message re-sent"))
        else:
            silent = (now - _aware(run.heartbeat_at)).total_seconds() if run.heartbeat_at else 0
            why = f"worker {run.worker_id} silent for {silent:.0f} s (attempt {run.attempts})"
            if run.cancel_requested:
                run.status = RunStatus.CANCELLED.value
                run.finished_at = now
                run.error = f"cancelled; {why}"
                actions.append(ReapAction(run.id, "cancelled", why))
            elif run.attempts >= max_attempts:
                run.status = RunStatus.FAILED.value
                run.finished_at = now
                run.error = f"gave up after {run.attempts} attempts: {why}"
                actions.append(ReapAction(run.id, "failed", why))
            else:
                run.status = RunStatus.QUEUED.value
                run.enqueued_at = now
                run.worker_id = None
                run.error = f"re-queued: {why}"
                actions.append(ReapAction(run.id, "requeued", why))
        session.add(run)
    session.flush()
    for action in actions:
        if action.action in ("cancelled", "failed"):
            record_finished(session, action.run_id)
    return actions


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def check_runs(
    session: Session, *, heartbeat_timeout_s: float = 60.0, queued_max_s: float = 3600.0
) -> list[str]:
    """Problems with runs, one line each (for ``cdmo check``): nothing means healthy."""
    now = utcnow()
    problems = []
    for run in session.exec(select(MatchRun).where(col(MatchRun.status).in_(_ACTIVE))):
        if run.status == RunStatus.QUEUED.value:
            age = (now - _aware(run.enqueued_at or run.created_at)).total_seconds()
            if age > queued_max_s:
                problems.append(f"run {run.id} queued for {age:.0f} s: are workers running?")
            continue
        if run.heartbeat_at is None:
            problems.append(f"run {run.id} is {run.status} with no heartbeat")
            continue
        silent = (now - _aware(run.heartbeat_at)).total_seconds()
        if silent > heartbeat_timeout_s:
            problems.append(
                f"run {run.id} is {run.status} but its worker {run.worker_id} has been silent "
                f"for {silent:.0f} s (the reaper re-queues it after {heartbeat_timeout_s:.0f} s)"
            )
    final_unfinished = select(MatchRun.id).where(
        col(MatchRun.status).in_(_FINAL), col(MatchRun.finished_at).is_(None)
    )
    for run_id in session.exec(final_unfinished):
        problems.append(f"run {run_id} is final but has no finished_at")
    no_commit = select(MatchRun).where(
        MatchRun.status == RunStatus.SUCCEEDED.value, col(MatchRun.dry_run).is_(False)
    )
    for run in session.exec(no_commit):
        if not (run.summary or {}).get("commit"):
            problems.append(f"run {run.id} succeeded without a commit record")
    return problems


def prune_snapshots(*, session: Session, older_than: dt.datetime) -> int:
    """Drop the stored snapshots of final runs finished before ``older_than`` (the summary,
    assignments and hashes stay); such runs can no longer be replayed."""
    result = session.execute(
        update(MatchRun)
        .where(
            col(MatchRun.status).in_(_FINAL),
            col(MatchRun.finished_at) < older_than,
            col(MatchRun.snapshot_pruned).is_(False),
            col(MatchRun.snapshot_gz).is_not(None),
        )
        .values(snapshot_gz=None, snapshot_pruned=True)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def status_counts(*, session: Session) -> dict[str, int]:
    rows = session.exec(select(MatchRun.status, func.count()).group_by(MatchRun.status))
    counts: Counter[str] = Counter({s.value: 0 for s in RunStatus})
    for status, n in rows:
        counts[status] = int(n)
    return dict(counts)


def lock_admission(*, session: Session) -> None:
    """Serialise run admissions (the cap check and the insert) on PostgreSQL; SQLite writers
    are serialised already."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy import text

        session.execute(text("SELECT pg_advisory_xact_lock(7310061)"))


def metrics_state(*, session: Session, recent: int = 200) -> Any:
    """The figures of :class:`service.metrics.RunsState`, from the runs table."""
    from service.metrics import RunsState

    now = utcnow()
    state = RunsState(by_status=status_counts(session=session))
    state.queue_depth = state.by_status.get(RunStatus.QUEUED.value, 0)
    active = session.exec(
        select(MatchRun.id, MatchRun.heartbeat_at).where(
            col(MatchRun.status).in_([RunStatus.RUNNING.value, RunStatus.COMMITTING.value])
        )
    )
    for run_id, beat in active:
        if beat is not None:
            state.heartbeat_age_s[run_id] = (now - _aware(beat)).total_seconds()
    finished = session.exec(
        select(MatchRun.started_at, MatchRun.finished_at, MatchRun.summary)
        .where(col(MatchRun.status).in_(_FINAL), col(MatchRun.finished_at).is_not(None))
        .order_by(col(MatchRun.finished_at).desc())
        .limit(recent)
    )
    for started, ended, summary in finished:
        if started is not None and ended is not None:
            state.durations_s.append((_aware(ended) - _aware(started)).total_seconds())
        if summary:
            state.gaps.append(float(summary.get("gap", 0.0)))
            for phase in ("snapshot", "solve", "persist", "commit"):
                if phase in summary.get("timings", {}):
                    state.phase_s.setdefault(phase, []).append(float(summary["timings"][phase]))
    return state


def in_scope(project: Any, scope: RunScope) -> bool:
    """Whether a project (a row or a snapshot project) is selected by ``scope``."""
    if scope.project_ids and project.id not in scope.project_ids:
        return False
    if scope.categories and project.category not in scope.categories:
        return False
    return not scope.markets or any(m in scope.markets for m in project.target_markets)


def count_in_scope(*, session: Session, scope: RunScope) -> int:
    """Open projects the scope selects (checked before a run is queued)."""
    from service.models import Project
    from service.repositories.market import SNAPSHOT_STATUSES

    filters = [col(Project.status).in_(SNAPSHOT_STATUSES)]
    if scope.project_ids:
        filters.append(col(Project.id).in_(scope.project_ids))
    if scope.categories:
        filters.append(col(Project.category).in_([c.value for c in scope.categories]))
    if not scope.markets:
        return int(session.exec(select(func.count()).select_from(Project).where(*filters)).one())
    rows = session.exec(select(Project.target_markets).where(*filters)).all()
    return sum(1 for markets in rows if any(m in scope.markets for m in markets))
