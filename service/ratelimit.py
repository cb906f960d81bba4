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
from starlette.concurrency import run_in_threadpool

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
        step = self._count(key_id, now)
        if step is not None and step.sync:
            step.synced = self._sync(step)
        return None if step is None else self._decide(step)

    async def check_async(self, key_id: str) -> RateLimitState | None:
        """:meth:`check` for the event loop: only a sync with the store takes a thread."""
        step = self._count(key_id, None)
        if step is not None and step.sync:
            step.synced = await run_in_threadpool(self._sync, step)
        return None if step is None else self._decide(step)

    def _count(self, key_id: str, now: float | None) -> _Step | None:
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
            step = _Step(key_id, w, reset_s, sync, w.pending)
            if sync:
                w.pending = 0
                w.synced_at = now
        return step

    def _sync(self, step: _Step) -> bool:
        try:
            count = self.store.incr(
                f"rl:{step.key_id}:{step.window.window}", self.cfg.window_s + 1, step.amount
            )
        except redis.RedisError:
            log.warning("rate limiter store unavailable; request let through", exc_info=True)
            return False
        with self._lock:
            step.window.known = max(step.window.known, count)
        return True

    def _decide(self, step: _Step) -> RateLimitState | None:
        if step.sync and not step.synced:
            return None  # fail open
        limit = self.cfg.requests
        count = step.window.known + step.window.pending
        state = RateLimitState(limit, max(0, limit - count), step.reset_s)
        if count > limit:
            raise RateLimitedError(
                f"more than {limit} requests in {self.cfg.window_s} s for this API key",
                headers={"Retry-After": str(step.reset_s), **state.headers()},
                retry_after_s=step.reset_s,
            )
        return state


@dataclass
class _Step:
    key_id: str
    window: _Window
    reset_s: int
    sync: bool
    amount: int
    synced: bool = False


def check_rate_limit(
    store: KeyValueStore, cfg: RateLimitSettings, key_id: str, *, now: float | None = None
) -> RateLimitState | None:
    """One request counted by a limiter of its own (exact for limits under 100)."""
    return RateLimiter(store, cfg).check(key_id, now=now)
