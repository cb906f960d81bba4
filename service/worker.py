"""``cdmo worker`` and the pieces shared with the API process: the one room joining the job
engine (:mod:`service.jobs`) and the flows (:mod:`service.flows`).

* :func:`init_process` / :func:`run_job`: what a job process does (warm-up once, then the
  match-run flow per job) - used by Dramatiq workers and by the embedded local pool alike;
* :class:`Reaper`: re-queues runs whose worker died or whose queue message was lost (runs in
  every worker and in the API process);
* :func:`serve`: the ``cdmo worker`` main loop.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

from service import repositories as repo
from service.config import Settings
from service.db import Database
from service.jobs.engine import DramatiqEngine, JobEngine, LocalPoolEngine, set_handler
from service.jobs.events import EventChannel, make_event_channel

log = logging.getLogger(__name__)

_ctx: Any = None  # the RunContext of this process (set by init_process)


def warm_up() -> float:
    """Compile (or load from cache) the matcher's kernels so no run pays JIT time."""
    from service.flows.match_run import warm_up as matcher_warm_up

    seconds = matcher_warm_up()
    log.info("matcher warm-up took %.2f s", seconds)
    return seconds


def _exit_with_parent() -> None:
    """A local-pool process ends when the API process that owns it is gone (even kill -9)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def init_pool_process(settings: Settings) -> None:
    _exit_with_parent()
    init_process(settings)


def init_process(settings: Settings, *, commit_delay_s: float | None = None) -> None:
    """Build this process's run context and warm the matcher up."""
    from service.flows.match_run import RunContext

    global _ctx
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=settings.log_level, format="%(levelname)s %(name)s %(process)d: %(message)s"
        )
    db = Database(settings.effective_database_url, settings.db)
    events = make_event_channel(
        settings.redis_url,
        db=db,
        prefix=settings.redis.key_prefix,
        socket_timeout_s=max(5.0, settings.redis.socket_timeout_s),
    )
    delay = settings.runs.commit_delay_s if commit_delay_s is None else commit_delay_s
    _ctx = RunContext(db=db, events=events, settings=settings.runs, commit_delay_s=delay)
    _ctx.heartbeats.start()  # its imports overlap the warm-up; no run waits for them
    warm_up()


def run_job(run_id: str) -> None:
    from service.flows.match_run import execute

    if _ctx is None:
        raise RuntimeError("init_process was not called in this process")
    execute(_ctx, run_id)


class Reaper:
    """Every ``reaper_interval_s``: re-queue (or fail) runs whose heartbeat stopped, re-send
    queued runs the queue may have lost. Several reapers (workers, API) may run at once: rows
    are taken with ``SKIP LOCKED`` and re-sent messages are harmless duplicates."""

    def __init__(
        self, db: Database, engine: JobEngine, events: EventChannel, settings: Settings
    ) -> None:
        self.db, self.engine, self.events, self.settings = db, engine, events, settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="run-reaper", daemon=True)

    def reap_once(self) -> list[Any]:
        cfg = self.settings.runs
        with self.db.session() as session:
            actions = repo.runs.reap(
                session=session,
                heartbeat_timeout_s=cfg.heartbeat_timeout_s,
                requeue_after_s=cfg.requeue_after_s,
                max_attempts=cfg.max_attempts,
            )
            session.commit()
        for action in actions:
            log.warning(
                "reaper: run %s (%s)", action.action, action.reason, extra={"run_id": action.run_id}
            )
            if action.action in ("requeued", "resent"):
                try:
                    self.engine.submit(action.run_id)
                except Exception:  # noqa: BLE001 - the broker is down: next round re-sends
                    log.warning("reaper could not re-send", extra={"run_id": action.run_id})
            self.events.publish(action.run_id, "status", {"reaper": action.action})
        return actions

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.runs.reaper_interval_s):
            try:
                self.reap_once()
            except Exception:  # noqa: BLE001 - keep reaping after a database blip
                log.warning("reaper round failed", exc_info=True)

    def start(self) -> Reaper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def dramatiq_engine(settings: Settings) -> DramatiqEngine:
    assert settings.redis_url
    return DramatiqEngine(
        settings.redis_url,
        namespace=settings.redis.key_prefix + "dramatiq",
        queue_name=settings.runs.queue_name,
        # Dramatiq's own consumer heartbeat is a thread of the solving interpreter: give it
        # room (a duplicate delivery would be harmless, the claim is conditional). The runs'
        # heartbeat, which the reaper reads, comes from the heartbeat process.
        heartbeat_timeout_s=max(60.0, settings.runs.heartbeat_timeout_s),
    )


def make_job_engine(settings: Settings) -> JobEngine:
    """Dramatiq on Redis when ``REDIS_URL`` is set; otherwise a local pool of processes that
    run the same job function (the embedded default)."""
    if settings.redis_url:
        return dramatiq_engine(settings)
    return LocalPoolEngine(
        run_job,
        processes=settings.runs.local_workers,
        initializer=init_pool_process,
        initargs=(settings,),
    )


def runs_state(db: Database) -> Any:
    with db.session(write=False) as session:
        return repo.runs.metrics_state(session=session)


def serve(settings: Settings, *, threads: int = 1) -> None:
    """Consume match runs from Redis until SIGTERM/SIGINT (``cdmo worker``)."""
    if not settings.redis_url:
        raise ValueError("cdmo worker needs REDIS_URL (without it the API runs jobs itself)")
    init_process(settings)
    engine = dramatiq_engine(settings)
    set_handler(run_job)
    worker = engine.worker(threads)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker.start()
    reaper = Reaper(_ctx.db, engine, _ctx.events, settings).start()
    from service.housekeeping import Housekeeper

    housekeeper = Housekeeper(_ctx.db, settings).start()  # proposal expiry, webhooks
    log.info("worker consuming %s with %d thread(s)", settings.runs.queue_name, threads)
    while not stop.wait(1.0):
        pass
    log.info("worker stopping")
    housekeeper.stop()
    reaper.stop()
    worker.stop(timeout=int(settings.runs.max_time_limit_s * 1000))
    _ctx.heartbeats.close()
    engine.close()
    time.sleep(0)
