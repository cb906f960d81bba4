"""Housekeeping as periodic jobs of the engine that runs the match runs: the expiry of
proposals not acted on and the webhook deliveries.

* With Redis: ``cdmo scheduler`` (:func:`serve_scheduler`, one process) sends one
  ``housekeeping`` message per task and period (:mod:`service.jobs.periodic`); the workers
  (``cdmo worker``) consume them beside the runs and claim each ``(task, period)`` once, so
  one expiry sweep runs per ``CDMO_DEALS__EXPIRY_INTERVAL_S`` however many API processes,
  workers (or schedulers) there are. Committed events are also kicked at once by each
  process's :class:`~service.notifications.delivery.Announcer`. API processes sweep nothing.
* Embedded (no Redis, one API process): :class:`Housekeeper` runs the same clock and the same
  sweep function (:class:`Sweeps`) in the API process, and the in-process deliverer thread.

Each sweep is safe to repeat: the expiry re-checks each proposal under its row lock, the
deliverer takes events with ``SKIP LOCKED``.
"""

from __future__ import annotations

import logging
import signal
import threading

from service.config import Settings
from service.db import Database
from service.flows import deals
from service.jobs.engine import DramatiqEngine
from service.jobs.periodic import PeriodicTask, Scheduler
from service.notifications.delivery import Announcer, Deliverer, make_deliverer

log = logging.getLogger(__name__)

EXPIRE = "expire"
DELIVER = "deliver"


def periodic_tasks(settings: Settings) -> list[PeriodicTask]:
    """What ``cdmo scheduler`` (or the embedded clock) sends, and how often."""
    tasks = [PeriodicTask(EXPIRE, settings.deals.expiry_interval_s)]
    if settings.notifications.enabled:
        tasks.append(PeriodicTask(DELIVER, settings.notifications.poll_interval_s))
    return tasks


class Sweeps:
    """The sweep functions, by task name: what one ``housekeeping`` job runs."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db, self.settings = db, settings
        self.deliverer: Deliverer | None = (
            make_deliverer(db, settings) if settings.notifications.enabled else None
        )

    def __call__(self, task: str) -> None:
        if task == EXPIRE:
            self.expire_once()
        elif task == DELIVER:
            if self.deliverer is not None:
                self.deliverer.deliver_due()
        else:
            raise ValueError(f"unknown housekeeping task {task!r}")

    def expire_once(self) -> int:
        expired = deals.expire_due(self.db, ttl_s=self.settings.deals.proposal_ttl_s)
        log.debug("expiry sweep: %d expired", expired)
        return expired

    def close(self) -> None:
        if self.deliverer is not None:
            self.deliverer.close()


class Housekeeper:
    """Embedded mode (the API process without Redis): the expiry clock and the in-process
    webhook deliverer, running :class:`Sweeps` exactly as the workers do."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db, self.settings = db, settings
        self.sweeps = Sweeps(db, settings)
        self.deliverer = self.sweeps.deliverer
        expire = [t for t in periodic_tasks(settings) if t.name == EXPIRE]
        self.clock = Scheduler(expire, self._sweep, name="housekeeper")

    def _sweep(self, task: PeriodicTask, period: int) -> None:
        try:
            self.sweeps(task.name)
        except Exception:  # noqa: BLE001 - a database blip: the next period sweeps again
            log.warning("%s sweep failed", task.name, exc_info=True)

    def expire_once(self) -> int:
        return self.sweeps.expire_once()

    def start(self) -> Housekeeper:
        self.clock.start()
        if self.deliverer is not None:
            self.deliverer.start()
        return self

    def stop(self) -> None:
        self.clock.stop()
        if self.deliverer is not None:
            self.deliverer.stop()


def announcer(settings: Settings, engine: DramatiqEngine) -> Announcer | None:
    """Redis mode: kicks a ``deliver`` job for each batch of events this process commits."""
    if not settings.redis_url or not settings.notifications.enabled:
        return None
    return Announcer(
        settings.redis_url,
        settings.notifications,
        prefix=settings.redis.key_prefix,
        kick=lambda: engine.send_housekeeping(DELIVER),
        socket_timeout_s=settings.redis.socket_timeout_s,
    )


def install(engine: DramatiqEngine, db: Database, settings: Settings) -> Sweeps:
    """In a consumer of the housekeeping queue: run :class:`Sweeps` for its messages."""
    sweeps = Sweeps(db, settings)
    engine.install_housekeeping(sweeps)
    return sweeps


def scheduler(settings: Settings, engine: DramatiqEngine) -> Scheduler:
    def send(task: PeriodicTask, period: int) -> None:
        engine.send_housekeeping(task.name, period, task.claim_ttl_s)

    return Scheduler(periodic_tasks(settings), send, name="scheduler")


def serve_scheduler(settings: Settings, engine: DramatiqEngine) -> None:
    """``cdmo scheduler``: send the periodic jobs until SIGTERM/SIGINT."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    clock = scheduler(settings, engine)
    log.info(
        "scheduler sending %s",
        ", ".join(f"{t.name} every {t.interval_s:g} s" for t in clock.tasks),
    )
    while not stop.is_set():
        clock.tick()
        stop.wait(clock.tick_s)
    log.info("scheduler stopping")
    engine.close()
