"""The job engine behind one small interface: ``submit(run_id)``.

* :class:`DramatiqEngine` (``REDIS_URL`` set): a Dramatiq actor on a Redis broker; ``cdmo
  worker`` processes consume it. Messages are acknowledged after the job returns, and Dramatiq
  re-queues the unacknowledged messages of a worker whose broker heartbeat stops.
* :class:`LocalPoolEngine` (embedded default): the same job function in a local process pool
  owned by the API process, so ``make run`` shows the whole flow without Redis.

Either way the job is ``job(run_id)`` and is idempotent: a duplicate delivery finds the run
already claimed (or final) in PostgreSQL and returns at once. The run table, not the queue, is
the source of truth; the reaper re-sends what the queue lost.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import ShutdownNotifications

from service.config import Settings

log = logging.getLogger(__name__)

JobFunction = Callable[[str], None]
HousekeepingFunction = Callable[[str], None]
ACTOR_NAME = "match_run"
HOUSEKEEPING_ACTOR = "housekeeping"
HOUSEKEEPING_QUEUE_SUFFIX = ".housekeeping"


class JobEngine(Protocol):
    kind: str

    def submit(self, run_id: str) -> None:
        """Queue ``run_id``'s job (at least once)."""
        ...

    def close(self) -> None: ...


# --- Dramatiq --------------------------------------------------------------------------------

_handler: JobFunction | None = None


def set_handler(job: JobFunction) -> None:
    """Called once by ``cdmo worker`` before consuming: the function the actor runs."""
    global _handler
    _handler = job


def _actor_entry(run_id: str) -> None:
    if _handler is None:  # a consumer that never called set_handler: a wiring bug
        raise RuntimeError("no job handler installed in this worker")
    _handler(run_id)


_housekeeping: HousekeepingFunction | None = None
_housekeeping_claim: Callable[[str, int, int], bool] | None = None


def set_housekeeping_handler(task: HousekeepingFunction) -> None:
    """Called by the consumers of the housekeeping queue: ``task(name)`` runs one sweep."""
    global _housekeeping
    _housekeeping = task


def _housekeeping_entry(task: str, period: int | None = None, claim_ttl_s: int = 60) -> None:
    """One periodic sweep (``period`` set: at most once per ``(task, period)`` across every
    consumer, claimed with ``SET NX`` in Redis) or one outbox batch's kick (``period`` None)."""
    if _housekeeping is None:
        raise RuntimeError("no housekeeping handler installed in this worker")
    if period is not None and _housekeeping_claim is not None:
        if not _housekeeping_claim(task, period, claim_ttl_s):
            log.info("housekeeping %s period %d: already claimed, skipped", task, period)
            return
        log.info("housekeeping %s period %d: claimed, sweeping", task, period)
    _housekeeping(task)


class DramatiqEngine:
    kind = "dramatiq"

    def __init__(
        self,
        redis_url: str,
        *,
        namespace: str,
        queue_name: str,
        heartbeat_timeout_s: float,
        socket_timeout_s: float = 5.0,
    ) -> None:
        self.queue_name = queue_name
        self.broker = RedisBroker(
            url=redis_url,
            namespace=namespace,
            heartbeat_timeout=int(heartbeat_timeout_s * 1000),
            # Maintenance (re-queueing a dead worker's messages) on ~5 % of fetches, not 0.1 %.
            maintenance_chance=50_000,
            # No time-limit or retry middleware: the run control enforces the time limit and
            # the reaper decides about retries, from what PostgreSQL says.
            middleware=[ShutdownNotifications()],
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
        )
        self.actor: dramatiq.Actor[Any, Any] = dramatiq.Actor(
            _actor_entry,
            broker=self.broker,
            actor_name=ACTOR_NAME,
            queue_name=queue_name,
            priority=0,
            options={},
        )

        self.housekeeping_queue = queue_name + HOUSEKEEPING_QUEUE_SUFFIX
        self.housekeeping_actor: dramatiq.Actor[Any, Any] = dramatiq.Actor(
            _housekeeping_entry,
            broker=self.broker,
            actor_name=HOUSEKEEPING_ACTOR,
            queue_name=self.housekeeping_queue,
            priority=0,
            options={},
        )
        self._claim_prefix = f"{namespace}:periodic:"

    def submit(self, run_id: str) -> None:
        self.actor.send(run_id)

    def send_housekeeping(
        self, task: str, period: int | None = None, claim_ttl_s: int = 60
    ) -> None:
        """Queue one sweep of ``task`` (for ``period``: run at most once, see the entry)."""
        self.housekeeping_actor.send(task, period, claim_ttl_s)

    def claim_period(self, task: str, period: int, ttl_s: int) -> bool:
        """True for the first claim of ``(task, period)`` on this broker, False after."""
        key = f"{self._claim_prefix}{task}:{period}"
        return bool(self.broker.client.set(key, b"1", nx=True, ex=max(1, int(ttl_s))))

    def install_housekeeping(self, task: HousekeepingFunction) -> None:
        """In a consumer of the housekeeping queue: what its messages run, and the claims."""
        global _housekeeping_claim
        set_housekeeping_handler(task)
        _housekeeping_claim = self.claim_period

    def housekeeping_worker(self, threads: int = 1) -> dramatiq.Worker:
        """A consumer of the housekeeping queue only, beside the runs' (a long solve never
        delays an expiry sweep or a webhook)."""
        worker = dramatiq.Worker(
            self.broker,
            queues={self.housekeeping_queue},
            worker_threads=threads,
            worker_timeout=500,
        )
        worker.queue_prefetch = threads
        return worker

    def queue_depth(self) -> int:
        client = self.broker.client
        return int(client.llen(f"{self.broker.namespace}:{self.queue_name}"))

    def worker(self, threads: int) -> dramatiq.Worker:
        worker = dramatiq.Worker(
            self.broker, queues={self.queue_name}, worker_threads=threads, worker_timeout=500
        )
        # Take no more runs than this process can solve at once (Dramatiq's default prefetch
        # of 2 per thread would let one idle-looking worker hoard the queue while others wait).
        worker.queue_prefetch = threads
        return worker

    def close(self) -> None:
        self.broker.close()


# --- local process pool ---------------------------------------------------------------------


class LocalPoolEngine:
    """A process pool (spawned, never forked from a threaded server) running ``job``.

    A pool process that dies (``kill -9``) breaks the pool; the next submit builds a new one,
    and the reaper re-sends the runs that were lost.
    """

    kind = "local"

    def __init__(
        self,
        job: JobFunction | str,
        *,
        processes: int,
        initializer: Callable[..., None] | str | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        # A ``"module:function"`` path is imported in the pool's processes only, so the API
        # process need not import the worker module (nor the matcher) to hand it over.
        if isinstance(initializer, str):
            initializer, initargs = _call_path, (initializer, *initargs)
        self._job: Any = job
        self._processes = processes
        self._initializer = initializer
        self._initargs = initargs
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def _ensure_pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=self._processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=self._initializer,
                    initargs=self._initargs,
                )
            return self._pool

    def start(self) -> None:
        """Start the processes now (each warms up in its initializer), not on the first run."""
        pool = self._ensure_pool()
        for _ in range(self._processes):
            pool.submit(_noop)

    def submit(self, run_id: str) -> None:
        call: tuple[Any, ...] = (
            (_call_path, self._job, run_id) if isinstance(self._job, str) else (self._job, run_id)
        )
        try:
            future = self._ensure_pool().submit(*call)
        except BrokenProcessPool:
            self._discard_broken()
            future = self._ensure_pool().submit(*call)
        future.add_done_callback(self._on_done)

    def _on_done(self, future: Future[None]) -> None:
        exc = future.exception()
        if isinstance(exc, BrokenProcessPool):
            log.warning("a local pool process died; the reaper will re-send its run")
            self._discard_broken()
        elif exc is not None:
            log.error("local job failed", exc_info=exc)

    def _discard_broken(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop now: a run in progress is abandoned (the reaper re-queues it next start)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            processes = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:  # no public way to stop a busy pool process
                process.terminate()
            for process in processes:
                process.join(timeout=5)


def _noop() -> None:
    return None


def _call_path(path: str, *args: Any) -> Any:
    """Call ``"package.module:function"`` with ``args`` (imported where it runs)."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)(*args)


def make_engine(
    redis_url: str | None,
    *,
    namespace: str,
    queue_name: str,
    heartbeat_timeout_s: float,
    job: JobFunction | str,
    local_processes: int,
    initializer: Callable[..., None] | str | None = None,
    initargs: tuple[Any, ...] = (),
) -> JobEngine:
    if redis_url:
        return DramatiqEngine(
            redis_url,
            namespace=namespace,
            queue_name=queue_name,
            heartbeat_timeout_s=heartbeat_timeout_s,
        )
    return LocalPoolEngine(
        job, processes=local_processes, initializer=initializer, initargs=initargs
    )


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
    run the same job function (the embedded default), named by path so that only the pool's
    processes import :mod:`service.worker`."""
    if settings.redis_url:
        return dramatiq_engine(settings)
    return LocalPoolEngine(
        "service.worker:run_job",
        processes=settings.runs.local_workers,
        initializer="service.worker:init_pool_process",
        initargs=(settings,),
    )
