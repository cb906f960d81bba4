"""The job every worker runs for a match run: claim -> snapshot -> match -> persist -> commit.

Idempotent and safe to deliver twice: the claim is a conditional update in PostgreSQL, every
later write names the claim token, an answer already persisted by an earlier attempt is
committed rather than solved again, and the commit is one transaction. The worker's heartbeat
process (:mod:`service.jobs.heartbeat`, outside the solving interpreter) refreshes
``heartbeat_at`` every ``heartbeat_interval_s`` and polls the cancel flag every
``cancel_poll_s``; a cancel asked through the API becomes ``RunControl.cancel()``; the reaper
re-queues a run whose heartbeat stops.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import platform
import socket
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

from schemas.api import RunProgress, RunScope, RunStatus, RunSummary
from schemas.market import MarketSnapshot, MatchResult, RunParams
from service import repositories as repo
from service.config import RunsSettings
from service.db import Database
from service.flows import commit_run
from service.flows.snapshot import run_snapshot
from service.jobs.events import EventChannel
from service.jobs.heartbeat import CANCEL, LOST, HeartbeatConfig, HeartbeatProcess
from service.models import MatchRun
from service.repositories.runs import LostClaim

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 0.5


@dataclass
class RunContext:
    """What a job needs, built once per worker process."""

    db: Database
    events: EventChannel
    settings: RunsSettings
    commit_delay_s: float = 0.0  # fault injection for tests: wait before the commit
    heartbeats: HeartbeatProcess = field(init=False)

    def __post_init__(self) -> None:
        # Started on the first run; ends with this process (its pipe closes).
        self.heartbeats = HeartbeatProcess(
            HeartbeatConfig(
                database_url=self.db.url,
                interval_s=self.settings.heartbeat_interval_s,
                cancel_poll_s=self.settings.cancel_poll_s,
                stall_timeout_s=self.settings.worker_stall_timeout_s,
            )
        )


def warm_up() -> float:
    """The matcher's warm-up: ``matcher.warm_up`` (kernels and solver) where the matcher has
    it, else the kernels' (compiled, or loaded from Numba's cache)."""
    import matcher
    from matcher.kernels import warm_up as kernels_warm_up

    whole: Callable[[], float] | None = getattr(matcher, "warm_up", None)
    return (whole or kernels_warm_up)()


def software_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name, dist in (
        ("matcher", "cdmo-market"),
        ("ortools", "ortools"),
        ("numba", "numba"),
        ("numpy", "numpy"),
    ):
        try:
            out[name] = version(dist)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def encode_snapshot(snapshot: MarketSnapshot) -> tuple[bytes, str]:
    """(zlib-compressed canonical JSON, its SHA-256)."""
    raw = snapshot.model_dump_json().encode()
    return zlib.compress(raw, 6), hashlib.sha256(raw).hexdigest()


def decode_snapshot(blob: bytes) -> MarketSnapshot:
    return MarketSnapshot.model_validate_json(zlib.decompress(blob))


def result_hash(result: MatchResult) -> str:
    placed = sorted((a.project_id, a.role.value, a.site_id) for a in result.assignments)
    raw = json.dumps({"objective": result.objective, "placed": placed}, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()


def new_token() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _event(ctx: RunContext, run_id: str, kind: str, data: dict[str, object]) -> None:
    ctx.events.publish(run_id, kind, data)


class Heartbeat:
    """The heartbeat of one claimed run, beaten by this worker's heartbeat process (not a
    thread of the solving interpreter: see :mod:`service.jobs.heartbeat`). Sets
    ``cancelled``/``lost`` and calls ``on_stop`` when the API asked to cancel or the claim was
    lost."""

    def __init__(self, ctx: RunContext, run_id: str, token: str) -> None:
        self.ctx, self.run_id, self.token = ctx, run_id, token
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self.on_stop: list[Callable[[], None]] = []

    def _on_event(self, kind: str) -> None:
        if kind == LOST:
            self.lost.set()
        elif kind == CANCEL:
            if self.cancelled.is_set():
                return
            self.cancelled.set()
        else:
            return
        for callback in self.on_stop:
            callback()

    def __enter__(self) -> Heartbeat:
        self.ctx.heartbeats.watch(self.run_id, self.token, self._on_event)
        return self

    def __exit__(self, *exc: object) -> None:
        self.ctx.heartbeats.unwatch(self.run_id)


def execute(ctx: RunContext, run_id: str) -> None:
    """The job: runs ``run_id`` to a final state (or leaves it to the reaper if this process
    dies). Never raises for a run that fails: the failure is recorded on the run."""
    token = new_token()
    with ctx.db.session() as session:
        run = repo.runs.claim(session=session, run_id=run_id, token=token)
        session.commit()
    if run is None:
        log.info("run not claimable (taken, final or cancelled): skipped", extra={"run_id": run_id})
        return
    log.info("run claimed, attempt %d", run.attempts, extra={"run_id": run_id})
    _event(ctx, run_id, "status", {"status": run.status, "attempt": run.attempts})
    try:
        with Heartbeat(ctx, run_id, token) as beat:
            if run.status == RunStatus.RUNNING.value:
                run = _solve_and_persist(ctx, run, token, beat)
            if run.status == RunStatus.COMMITTING.value:
                _commit(ctx, run, token)
    except LostClaim:
        log.warning("run was taken from this worker (reaped); stopping", extra={"run_id": run_id})
        return
    except Exception as exc:  # noqa: BLE001 - recorded on the run, which must not stay running
        log.exception("run failed", extra={"run_id": run_id})
        _fail(ctx, run_id, token, f"{type(exc).__name__}: {exc}")
        return
    with ctx.db.session(write=False) as session:
        final = repo.runs.load(session, run_id)
        if final is not None:
            _event(ctx, run_id, "status", {"status": final.status})
    if (
        final is not None
        and final.status == RunStatus.SUCCEEDED.value
        and not final.dry_run
        and final.replay_of is None
    ):
        _store_explanations(ctx, run_id)


def _store_explanations(ctx: RunContext, run_id: str) -> None:
    """The run's explanations, computed here once so the API only reads them (best effort:
    without them the API explains from the run's snapshot)."""
    from service.flows.explanations import store_run_explanations

    t0 = time.perf_counter()
    try:
        stored = store_run_explanations(ctx.db, run_id)
    except Exception:  # noqa: BLE001 - an explanation never fails a committed run
        log.warning(
            "could not store the run's explanations", extra={"run_id": run_id}, exc_info=True
        )
        return
    log.info(
        "stored %d explanations in %.2f s",
        stored,
        time.perf_counter() - t0,
        extra={"run_id": run_id},
    )


def _fail(ctx: RunContext, run_id: str, token: str, error: str) -> None:
    try:
        with ctx.db.session() as session:
            repo.runs.finish(
                session=session, run_id=run_id, token=token, status=RunStatus.FAILED, error=error
            )
            session.commit()
        _event(ctx, run_id, "status", {"status": RunStatus.FAILED.value, "error": error})
    except LostClaim:
        pass


def _snapshot_for(ctx: RunContext, run: MatchRun) -> MarketSnapshot:
    if run.replay_of is not None:
        with ctx.db.session(write=False) as session:
            original = repo.runs.load(session, run.replay_of)
            blob = original.snapshot_gz if original is not None else None
        if blob is None:
            raise RuntimeError(f"the snapshot of run {run.replay_of} was pruned")
        return decode_snapshot(blob)
    as_of = run.created_at.date() if run.created_at else dt.date.today()
    return run_snapshot(ctx.db, as_of=as_of, scope=RunScope.model_validate(run.scope))


class _Background:
    """One function on a thread of its own; ``join()`` returns its duration in seconds or
    raises what it raised."""

    def __init__(self, fn: Callable[[], None], name: str) -> None:
        self._fn, self._seconds = fn, 0.0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            self._fn()
        except BaseException as exc:  # noqa: BLE001 - handed to join()
            self._error = exc
        self._seconds = time.perf_counter() - started

    def join(self) -> float:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._seconds


def _store_snapshot(ctx: RunContext, run_id: str, token: str, snapshot: MarketSnapshot) -> None:
    blob, digest = encode_snapshot(snapshot)
    with ctx.db.session() as session:
        repo.runs.record_snapshot(
            session=session,
            run_id=run_id,
            token=token,
            snapshot_gz=blob,
            snapshot_hash=digest,
            market_version=snapshot.version,
            versions=software_versions(),
        )
        session.commit()


def _solve_and_persist(ctx: RunContext, run: MatchRun, token: str, beat: Heartbeat) -> MatchRun:
    from matcher.control import Progress, RunControl
    from matcher.market import match

    run_id = run.id
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    _event(ctx, run_id, "progress", {"phase": "snapshot", "elapsed_s": 0.0})
    snapshot = _snapshot_for(ctx, run)
    timings["snapshot"] = time.perf_counter() - t0
    # Compress, hash and store the snapshot (audit, replay) beside the solve, not before it:
    # zlib and the database write release the GIL; joined before the answer is persisted.
    store = _Background(lambda: _store_snapshot(ctx, run_id, token, snapshot), "snapshot-store")
    log.info(
        "snapshot: %d projects, %d sites, version %d",
        len(snapshot.projects),
        len(snapshot.sites),
        snapshot.version,
        extra={"run_id": run_id},
    )
    if not snapshot.projects:
        store.join()
        raise RuntimeError("the scope selects no open project any more")

    params = RunParams.model_validate(run.params)
    last_sent = [0.0]

    def on_progress(p: Progress) -> None:
        now = time.perf_counter()
        if p.phase != "done" and now - last_sent[0] < PROGRESS_EVERY_S:
            return
        last_sent[0] = now
        progress = RunProgress(
            phase=p.phase,
            elapsed_s=round(timings["snapshot"] + p.elapsed_s, 3),
            objective=p.objective,
            bound=p.bound,
            gap=p.gap,
            placed=p.placed,
        )
        _event(ctx, run_id, "progress", progress.model_dump(mode="json"))
        try:
            with ctx.db.session() as session:
                repo.runs.record_progress(
                    session=session, run_id=run_id, token=token, progress=progress
                )
                session.commit()
        except LostClaim:
            beat.lost.set()
            control.cancel()

    control = RunControl(
        params.time_limit_s, deterministic=params.deterministic, on_progress=on_progress
    )
    beat.on_stop.append(control.cancel)
    t1 = time.perf_counter()
    try:
        result = match(snapshot, params, control)
    finally:
        timings["solve"] = time.perf_counter() - t1
        stored_in = store.join()  # raises what the store raised (e.g. LostClaim)
    timings["snapshot_store"] = stored_in
    if beat.lost.is_set():
        raise LostClaim(run_id)

    cancelled = beat.cancelled.is_set()
    summary = _summary(ctx, run, snapshot, result, timings, partial=cancelled or result.partial)
    if cancelled:
        next_status = RunStatus.CANCELLED
    elif run.dry_run or run.replay_of is not None:
        next_status = RunStatus.SUCCEEDED
    else:
        next_status = RunStatus.COMMITTING
    t2 = time.perf_counter()
    assignments = [a.model_dump(mode="json") for a in result.assignments]
    unassigned = [u.model_dump(mode="json") for u in result.unassigned]
    with ctx.db.session() as session:
        repo.runs.persist_result(
            session=session,
            run_id=run_id,
            token=token,
            assignments=assignments,
            unassigned=unassigned,
            summary=summary,
            next_status=next_status,
        )
        session.commit()
    timings["persist"] = time.perf_counter() - t2
    summary = summary.model_copy(update={"timings": {**summary.timings, **timings}})
    with ctx.db.session() as session:
        _save_summary(session, run_id, summary)
        session.commit()
        reloaded = repo.runs.load(session, run_id)
    assert reloaded is not None
    log.info(
        "run solved: objective %.0f, gap %.4f, %d placed, status %s",
        result.objective,
        result.gap,
        len(result.assignments),
        next_status.value,
        extra={"run_id": run_id},
    )
    return reloaded


def _save_summary(session: object, run_id: str, summary: RunSummary) -> None:
    from sqlalchemy import update

    session.execute(  # type: ignore[attr-defined]
        update(MatchRun)
        .where(MatchRun.id == run_id)  # type: ignore[arg-type]
        .values(summary=summary.model_dump(mode="json"))
    )


def _summary(
    ctx: RunContext,
    run: MatchRun,
    snapshot: MarketSnapshot,
    result: MatchResult,
    timings: dict[str, float],
    *,
    partial: bool,
) -> RunSummary:
    identical = None
    if run.replay_of is not None:
        with ctx.db.session(write=False) as session:
            original = repo.runs.load(session, run.replay_of)
            previous = (original.summary or {}) if original is not None else {}
        identical = previous.get("result_hash") == result_hash(result)
    placed_projects = {a.project_id for a in result.assignments}
    return RunSummary(
        status=result.status.value,
        objective=result.objective,
        bound=result.bound,
        gap=result.gap,
        partial=partial,
        projects=len(snapshot.projects),
        placed=len(placed_projects),
        unplaced=len(result.unassigned),
        unplaced_by_reason=dict(Counter(u.reason.value for u in result.unassigned)),
        timings={
            **timings,
            **{f"match.{k}": round(v, 4) for k, v in result.timings.items()},
        },
        result_hash=result_hash(result),
        replay_identical=identical,
        notes=list(result.notes),
    )


def _commit(ctx: RunContext, run: MatchRun, token: str) -> None:
    if ctx.commit_delay_s:
        time.sleep(ctx.commit_delay_s)
    _event(ctx, run.id, "status", {"status": RunStatus.COMMITTING.value})
    started = time.perf_counter()
    summary = RunSummary.model_validate(run.summary)
    with ctx.db.session() as session:
        commit_run.commit(session, run=run, token=token, summary=summary, started=started)
        session.commit()
