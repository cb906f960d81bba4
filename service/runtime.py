"""What one running app holds: settings, database, key-value store, metrics."""

from __future__ import annotations

from dataclasses import dataclass

from service.config import Settings
from service.db import Database
from service.metrics import Metrics
from service.store import KeyValueStore, make_store


@dataclass
class Services:
    settings: Settings
    db: Database
    store: KeyValueStore
    metrics: Metrics

    def close(self) -> None:
        self.store.close()
        self.db.dispose()


def build_services(settings: Settings) -> Services:
    return Services(
        settings=settings,
        db=Database(settings.effective_database_url, settings.db),
        store=make_store(
            settings.redis_url,
            prefix=settings.redis.key_prefix,
            socket_timeout_s=settings.redis.socket_timeout_s,
        ),
        metrics=Metrics(),
    )
