"""A small key-value store for idempotency records and rate-limit counters.

Redis when ``REDIS_URL`` is set (shared by every process); otherwise an in-process dict with
the same semantics, which keeps the embedded default working in a single process.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

import redis


class KeyValueStore(Protocol):
    kind: str

    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes, ttl_s: int) -> None: ...

    def set_nx(self, key: str, value: bytes, ttl_s: int) -> bool:
        """Set only if absent; True when this call set it."""
        ...

    def delete(self, key: str) -> None: ...

    def incr(self, key: str, ttl_s: int, amount: int = 1) -> int:
        """Add ``amount`` to a counter, creating it with ``ttl_s`` to live; the new value."""
        ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...


class RedisStore:
    kind = "redis"

    def __init__(self, url: str, *, prefix: str = "", socket_timeout_s: float = 2.0) -> None:
        self.prefix = prefix
        self.client = redis.Redis.from_url(
            url, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s
        )

    def _k(self, key: str) -> str:
        return self.prefix + key

    def get(self, key: str) -> bytes | None:
        value = self.client.get(self._k(key))
        return value if value is None else bytes(value)  # type: ignore[arg-type]

    def set(self, key: str, value: bytes, ttl_s: int) -> None:
        self.client.set(self._k(key), value, ex=ttl_s)

    def set_nx(self, key: str, value: bytes, ttl_s: int) -> bool:
        return bool(self.client.set(self._k(key), value, ex=ttl_s, nx=True))

    def delete(self, key: str) -> None:
        self.client.delete(self._k(key))

    def incr(self, key: str, ttl_s: int, amount: int = 1) -> int:
        pipe = self.client.pipeline(transaction=True)
        pipe.incrby(self._k(key), amount)
        pipe.expire(self._k(key), ttl_s, nx=True)
        count, _ = pipe.execute()
        return int(count)

    def ping(self) -> bool:
        return bool(self.client.ping())

    def close(self) -> None:
        self.client.close()


class MemoryStore:
    """Thread-safe, expiring, process-local. Semantics match :class:`RedisStore`."""

    kind = "memory"

    def __init__(self) -> None:
        self._data: dict[str, tuple[float, bytes | int]] = {}
        self._lock = threading.Lock()
        self._now = time.monotonic

    def _live(self, key: str) -> bytes | int | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= self._now():
            del self._data[key]
            return None
        return value

    def _sweep(self) -> None:
        if len(self._data) > 10_000:
            now = self._now()
            for key in [k for k, (exp, _) in self._data.items() if exp <= now]:
                del self._data[key]

    def get(self, key: str) -> bytes | None:
        with self._lock:
            value = self._live(key)
            return value if isinstance(value, bytes) else None

    def set(self, key: str, value: bytes, ttl_s: int) -> None:
        with self._lock:
            self._sweep()
            self._data[key] = (self._now() + ttl_s, value)

    def set_nx(self, key: str, value: bytes, ttl_s: int) -> bool:
        with self._lock:
            if self._live(key) is not None:
                return False
            self._sweep()
            self._data[key] = (self._now() + ttl_s, value)
            return True

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def incr(self, key: str, ttl_s: int, amount: int = 1) -> int:
        with self._lock:
            current = self._live(key)
            if isinstance(current, int):
                expires = self._data[key][0]
                self._data[key] = (expires, current + amount)
                return current + amount
            self._sweep()
            self._data[key] = (self._now() + ttl_s, amount)
            return amount

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        with self._lock:
            self._data.clear()


def make_store(redis_url: str | None, *, prefix: str, socket_timeout_s: float) -> KeyValueStore:
    if redis_url:
        return RedisStore(redis_url, prefix=prefix, socket_timeout_s=socket_timeout_s)
    return MemoryStore()
