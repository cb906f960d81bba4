"""Who is calling: an API key resolved to its organisation (a *principal*).

Keys are resolved once per ``cache_ttl_s`` per process, not once per request: the
:class:`Authenticator` keeps the principals of recently seen keys in memory, by the key's HMAC.
Revoking a key drops it from the cache of the process that revoked it at once, and from every
other process through a Redis channel (when ``REDIS_URL`` is set) within milliseconds. If a
message is lost (Redis down), the cache entry still expires after ``cache_ttl_s``: that is the
longest a revoked key can still be accepted. A process that loses its subscription clears its
whole cache when it reconnects, since it may have missed revocations.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from sqlalchemy import select
from sqlmodel import Session

from schemas.api import OrgKind
from service.models import ApiKey, Organisation
from service.security import hash_api_key

log = logging.getLogger(__name__)

MAX_KEY_LENGTH = 200
REVOKED_CHANNEL = "auth:revoked"


@dataclass(frozen=True)
class Principal:
    org_id: str
    kind: OrgKind
    key_id: str

    @property
    def is_operator(self) -> bool:
        return self.kind == OrgKind.OPERATOR

    @property
    def is_maker(self) -> bool:
        return self.kind == OrgKind.MAKER

    @property
    def is_cdmo(self) -> bool:
        return self.kind == OrgKind.CDMO


def lookup_key(session: Session, key_hash: str) -> Principal | None:
    """The principal of an active key, or None. One indexed lookup by the key's HMAC."""
    stmt = (
        select(ApiKey.id, Organisation.id, Organisation.kind)  # type: ignore[call-overload]
        .join(Organisation, Organisation.id == ApiKey.org_id)
        .where(ApiKey.key_hash == key_hash)
        .where(ApiKey.revoked_at.is_(None))  # type: ignore[union-attr]
    )
    row = session.execute(stmt).first()
    if row is None:
        return None
    key_id, org_id, kind = row
    return Principal(org_id=org_id, kind=OrgKind(kind), key_id=key_id)


def authenticate(session: Session, key: str, secret: str) -> Principal | None:
    """Resolve ``key`` without any cache (the CLI and tests)."""
    if len(key) > MAX_KEY_LENGTH:
        return None
    return lookup_key(session, hash_api_key(key, secret))


class Authenticator:
    """API key -> principal, through a short-lived per-process cache (see module doc)."""

    def __init__(
        self,
        secret: str,
        ttl_s: float,
        *,
        redis_client: redis.Redis | None = None,
        channel: str = REVOKED_CHANNEL,
    ) -> None:
        self._secret = secret
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()
        self._redis = redis_client
        self._channel = channel
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None

    def key_hash(self, key: str) -> str | None:
        return None if len(key) > MAX_KEY_LENGTH else hash_api_key(key, self._secret)

    def cached(self, key_hash: str) -> Principal | None:
        item = self._cache.get(key_hash)
        if item is None:
            return None
        expires, principal = item
        if expires <= time.monotonic():
            with self._lock:
                self._cache.pop(key_hash, None)
            return None
        return principal

    def resolve(self, key_hash: str, open_session: Callable[[], Session]) -> Principal | None:
        """The cached principal, or one looked up in a session from ``open_session``."""
        principal = self.cached(key_hash)
        if principal is not None:
            return principal
        with open_session() as session:
            principal = lookup_key(session, key_hash)
        if principal is not None:
            with self._lock:
                if len(self._cache) > 100_000:  # bounded: forget everything rather than grow
                    self._cache.clear()
                self._cache[key_hash] = (time.monotonic() + self.ttl_s, principal)
        return principal

    def revoked(self, key_hash: str) -> None:
        """Forget ``key_hash`` here and tell the other processes. Call after the commit."""
        self._forget(key_hash)
        if self._redis is not None:
            try:
                self._redis.publish(self._channel, key_hash)
            except redis.RedisError:
                log.warning(
                    "could not broadcast a key revocation; other processes "
                    "refuse the key within %s s",
                    self.ttl_s,
                    exc_info=True,
                )

    def _forget(self, key_hash: str) -> None:
        with self._lock:
            self._cache.pop(key_hash, None)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    # --- the revocation listener (one daemon thread per process, with Redis only) ---------

    def start(self) -> None:
        if self._redis is None or self._listener is not None:
            return
        self._listener = threading.Thread(
            target=self._listen, name="cdmo-auth-revocations", daemon=True
        )
        self._listener.start()

    def stop(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.join(timeout=3)
            self._listener = None

    def _listen(self) -> None:
        assert self._redis is not None
        backoff = 0.1
        while not self._stop.is_set():
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self._channel)
                self.clear()  # anything revoked while we were not listening is forgotten
                backoff = 0.1
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message and message.get("type") == "message":
                        data = message["data"]
                        self._forget(data.decode() if isinstance(data, bytes) else str(data))
            except (redis.RedisError, OSError, ValueError):
                log.warning("auth revocation listener lost Redis; retrying", exc_info=True)
                self.clear()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                try:
                    pubsub.close()
                except (redis.RedisError, OSError):
                    pass
