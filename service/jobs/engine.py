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

log = logging.getLogger(__name__)

JobFunction = Callable[[str], None]
ACTOR_NAME = "match_run"


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

    def submit(self, run_id: str) -> None:
        self.actor.send(run_id)

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
        job: JobFunction,
        *,
        processes: int,
        initializer: Callable[..., None] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        self._job = job
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
        try:
            future = self._ensure_pool().submit(self._job, run_id)
        except BrokenProcessPool:
            self._discard_broken()
            future = self._ensure_pool().submit(self._job, run_id)
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


def make_engine(
    redis_url: str | None,
    *,
    namespace: str,
    queue_name: str,
    heartbeat_timeout_s: float,
    job: JobFunction,
    local_processes: int,
    initializer: Callable[..., None] | None = None,
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
