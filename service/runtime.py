"""What one running app holds: settings, database, key-value store, authenticator, metrics."""

from __future__ import annotations

from dataclasses import dataclass

from service.auth import Authenticator
from service.config import Settings
from service.db import Database
from service.jobs.engine import JobEngine
from service.jobs.events import EventChannel, make_event_channel
from service.metrics import Metrics
from service.ratelimit import RateLimiter
from service.store import KeyValueStore, RedisStore, make_store


@dataclass
class Services:
    settings: Settings
    db: Database
    store: KeyValueStore
    metrics: Metrics
    auth: Authenticator
    limiter: RateLimiter
    events: EventChannel
    jobs: JobEngine | None = None  # set by create_app (needs the worker's job function)

    def close(self) -> None:
        if self.jobs is not None:
            self.jobs.close()
        self.events.close()
        self.auth.stop()
        self.store.close()
        self.db.dispose()


def build_services(settings: Settings) -> Services:
    store = make_store(
        settings.redis_url,
        prefix=settings.redis.key_prefix,
        socket_timeout_s=settings.redis.socket_timeout_s,
    )
    auth = Authenticator(
        settings.auth.hmac_secret.get_secret_value(),
        settings.auth.cache_ttl_s,
        redis_client=store.client if isinstance(store, RedisStore) else None,
        channel=settings.redis.key_prefix + "auth:revoked",
    )
    db = Database(settings.effective_database_url, settings.db)
    return Services(
        settings=settings,
        db=db,
        store=store,
        metrics=Metrics(),
        auth=auth,
        limiter=RateLimiter(store, settings.rate_limit),
        events=make_event_channel(
            settings.redis_url,
            db=db,
            prefix=settings.redis.key_prefix,
            socket_timeout_s=max(5.0, settings.redis.socket_timeout_s),
        ),
    )
