"""Per-API-key rate limiting: a fixed window counter in the key-value store (Redis)."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import redis

from service.config import RateLimitSettings
from service.errors import RateLimitedError
from service.store import KeyValueStore

log = logging.getLogger(__name__)


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


def check_rate_limit(
    store: KeyValueStore, cfg: RateLimitSettings, key_id: str, *, now: float | None = None
) -> RateLimitState | None:
    """Count one request for ``key_id``; raise :class:`RateLimitedError` past the limit.

    A store outage fails open (logged): losing rate limiting briefly beats refusing all traffic.
    """
    if not cfg.enabled:
        return None
    now = time.time() if now is None else now
    window = int(now // cfg.window_s)
    reset_s = max(1, math.ceil(cfg.window_s - (now % cfg.window_s)))
    try:
        count = store.incr(f"rl:{key_id}:{window}", cfg.window_s + 1)
    except redis.RedisError:
        log.warning("rate limiter store unavailable; request let through", exc_info=True)
        return None
    state = RateLimitState(cfg.requests, max(0, cfg.requests - count), reset_s)
    if count > cfg.requests:
        raise RateLimitedError(
            f"more than {cfg.requests} requests in {cfg.window_s} s for this API key",
            headers={"Retry-After": str(reset_s), **state.headers()},
            retry_after_s=reset_s,
        )
    return state
