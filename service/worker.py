"""``cdmo worker`` and the pieces shared with the API process: the one room joining the job
engine (:mod:`service.jobs`) and the flows (:mod:`service.flows`).

* :func:`init_process` / :func:`run_job`: what a job process does (warm-up once, then the
  match-run flow per job) - used by Dramatiq workers and by the embedded local pool alike;
* :func:`serve`: the ``cdmo worker`` main loop: the runs' consumer, the housekeeping
  consumer (expiry, webhooks: :mod:`service.housekeeping`), the reaper
  (:mod:`service.jobs.reaper`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

from service import housekeeping
from service.config import Settings
from service.db import Database
from service.jobs.engine import dramatiq_engine, make_job_engine, set_handler
from service.jobs.events import make_event_channel
from service.jobs.reaper import Reaper, runs_state
from service.jobs.workers import WorkerRegistry, worker_id

__all__ = [
    "Reaper",
    "dramatiq_engine",
    "init_pool_process",
    "init_process",
    "make_job_engine",
    "run_job",
    "runs_state",
    "serve",
    "warm_up",
]

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
    # Proposal expiry and webhook deliveries: jobs sent by `cdmo scheduler` (one sweep per
    # period across all workers) and by the announcers of the processes committing events.
    sweeps = housekeeping.install(engine, _ctx.db, settings)
    housekeeper = engine.housekeeping_worker(1)
    housekeeper.start()
    announcer = housekeeping.announcer(settings, engine)
    if announcer is not None:
        announcer.start()
    reaper = Reaper(_ctx.db, engine, _ctx.events, settings).start()
    log.info("worker consuming %s with %d thread(s)", settings.runs.queue_name, threads)
    beats = WorkerRegistry(engine.broker.client, prefix=settings.redis.key_prefix)
    me = worker_id()
    while True:
        try:
            beats.beat(me)  # /ready counts the workers that beat recently
        except Exception:  # noqa: BLE001 - Redis away: the broker reconnects, so do we
            log.warning("worker heartbeat failed", exc_info=True)
        if stop.wait(1.0):
            break
    log.info("worker stopping")
    try:
        beats.leave(me)
    except Exception:  # noqa: BLE001 - it ages out of the window anyway
        pass
    reaper.stop()
    if announcer is not None:
        announcer.stop()
    housekeeper.stop(timeout=10_000)
    sweeps.close()
    worker.stop(timeout=int(settings.runs.max_time_limit_s * 1000))
    _ctx.heartbeats.close()
    engine.close()
    time.sleep(0)
