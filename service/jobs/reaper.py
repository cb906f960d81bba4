"""The runs' reaper: re-queues runs whose worker died or whose queue message was lost (in
every worker and in the API process). Infrastructure: reads and writes the runs' rows through
the repositories and re-sends through the engine."""

from __future__ import annotations

import logging
import threading
from typing import Any

from service import repositories as repo
from service.config import Settings
from service.db import Database
from service.jobs.engine import JobEngine
from service.jobs.events import EventChannel

log = logging.getLogger(__name__)


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


def runs_state(db: Database) -> Any:
    with db.session(write=False) as session:
        return repo.runs.metrics_state(session=session)
