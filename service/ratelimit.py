"""Per-API-key rate limiting: a fixed window counter in the key-value store (Redis), counted
in small batches so that a request rarely waits for Redis.

Each process counts a key's requests locally and adds them to the shared counter (INCRBY)
when it has ``batch`` of them, when ``sync_s`` has passed since its last sync, or as soon as
its estimate reaches the limit; the answer to that INCRBY is the count of every process. So
the limit holds exactly where it matters (every request near the limit is synced) and it can
be overshot by at most ``batch - 1`` requests per process per window; ``batch`` is 1/50 of the
limit, so small limits are counted exactly.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

import redis

from service.config import RateLimitSettings
from service.errors import RateLimitedError
from service.store import KeyValueStore

log = logging.getLogger(__name__)

SYNC_S = 0.5


@dataclass(frozen=True)
class RateLimitState:
    limit: int
    remaining: int
    reset_s: int

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }


@dataclass
class _Window:
    window: int
    known: int = 0  # the shared count at the last sync (ours included)
    pending: int = 0  # counted here since then
    synced_at: float = 0.0


class RateLimiter:
    def __init__(self, store: KeyValueStore, cfg: RateLimitSettings) -> None:
        self.store = store
        self.cfg = cfg
        self.batch = max(1, cfg.requests // 50)
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()

    def check(self, key_id: str, *, now: float | None = None) -> RateLimitState | None:
        """Count one request for ``key_id``; raise :class:`RateLimitedError` past the limit.

        A store outage fails open (logged): losing rate limiting briefly beats refusing all
        traffic.
        """
        cfg = self.cfg
        if not cfg.enabled:
            return None
        now = time.time() if now is None else now
        window = int(now // cfg.window_s)
        reset_s = max(1, math.ceil(cfg.window_s - (now % cfg.window_s)))
        with self._lock:
            w = self._windows.get(key_id)
            if w is None or w.window != window:
                if len(self._windows) > 100_000:
                    self._windows.clear()
                w = self._windows[key_id] = _Window(window)
            w.pending += 1
            count = w.known + w.pending
            sync = w.pending >= self.batch or now - w.synced_at >= SYNC_S or count >= cfg.requests
            pending = w.pending
            if sync:
                w.pending = 0
                w.synced_at = now
        if sync:
            try:
                count = self.store.incr(f"rl:{key_id}:{window}", cfg.window_s + 1, pending)
            except redis.RedisError:
                log.warning("rate limiter store unavailable; request let through", exc_info=True)
                return None
            with self._lock:
                w.known = max(w.known, count)
                count = w.known + w.pending
        state = RateLimitState(cfg.requests, max(0, cfg.requests - count), reset_s)
        if count > cfg.requests:
            raise RateLimitedError(
                f"more than {cfg.requests} requests in {cfg.window_s} s for this API key",
                headers={"Retry-After": str(reset_s), **state.headers()},
                retry_after_s=reset_s,
            )
        return state


def check_rate_limit(
    store: KeyValueStore, cfg: RateLimitSettings, key_id: str, *, now: float | None = None
) -> RateLimitState | None:
    """One request counted by a limiter of its own (exact for limits under 100)."""
    return RateLimiter(store, cfg).check(key_id, now=now)
