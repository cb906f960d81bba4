"""Periodic work beside the runs' reaper, in every worker and in the API process: the expiry
of proposals not acted on (``deals.expiry_interval_s``) and the webhook deliverer.

Several processes may run it at once: the expiry re-checks each proposal under its row lock
(an already-expired one is skipped), the deliverer takes events with ``SKIP LOCKED``.
"""

from __future__ import annotations

import logging
import threading

from service.config import Settings
from service.db import Database
from service.flows import deals
from service.notifications.delivery import Deliverer, make_deliverer

log = logging.getLogger(__name__)


class Housekeeper:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db, self.settings = db, settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="housekeeper", daemon=True)
        self.deliverer: Deliverer | None = (
            make_deliverer(db, settings) if settings.notifications.enabled else None
        )

    def expire_once(self) -> int:
        return deals.expire_due(self.db, ttl_s=self.settings.deals.proposal_ttl_s)

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.deals.expiry_interval_s):
            try:
                self.expire_once()
            except Exception:  # noqa: BLE001 - a database blip: next round
                log.warning("expiry sweep failed", exc_info=True)

    def start(self) -> Housekeeper:
        self._thread.start()
        if self.deliverer is not None:
            self.deliverer.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.deliverer is not None:
            self.deliverer.stop()
