"""The key-value store behind idempotency and rate limits: Redis and the in-process twin
must behave the same (the Redis runs talk to a real server)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from service.config import RateLimitSettings
from service.errors import RateLimitedError
from service.ratelimit import check_rate_limit
from service.store import KeyValueStore, MemoryStore, RedisStore


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, key_prefix: str) -> Iterator[KeyValueStore]:
    if request.param == "memory":
        s: KeyValueStore = MemoryStore()
    else:
        url = request.getfixturevalue("redis_url")
        s = RedisStore(url, prefix=f"{key_prefix}store:{uuid.uuid4().hex[:6]}:")
    yield s
    s.close()


def test_set_nx_only_sets_once(store: KeyValueStore) -> None:
    assert store.set_nx("a", b"1", 60)
    assert not store.set_nx("a", b"2", 60)
    assert store.get("a") == b"1"
    store.set("a", b"3", 60)
    assert store.get("a") == b"3"
    store.delete("a")
    assert store.get("a") is None
    assert store.set_nx("a", b"4", 60)


def test_values_expire(store: KeyValueStore) -> None:
    store.set("short", b"x", 1)
    assert store.get("short") == b"x"
    time.sleep(1.2)
    assert store.get("short") is None
    assert store.set_nx("short", b"y", 1)


def test_counters(store: KeyValueStore) -> None:
    assert [store.incr("c", 60) for _ in range(3)] == [1, 2, 3]
    assert store.incr("other", 60) == 1
    assert store.ping()


def test_fixed_window_rate_limit(store: KeyValueStore) -> None:
    cfg = RateLimitSettings(requests=3, window_s=10)
    now = 1_000_000.0  # start of a 10 s window
    states = [check_rate_limit(store, cfg, "key_a", now=now + i) for i in range(3)]
    assert [s.remaining for s in states if s] == [2, 1, 0]
    with pytest.raises(RateLimitedError) as info:
        check_rate_limit(store, cfg, "key_a", now=now + 3)
    assert info.value.headers["Retry-After"] == "7"
    assert check_rate_limit(store, cfg, "key_b", now=now + 3) is not None  # another key
    assert check_rate_limit(store, cfg, "key_a", now=now + 10) is not None  # next window
    assert check_rate_limit(store, RateLimitSettings(enabled=False), "key_a") is None


def test_redis_outage_fails_open_for_rate_limits_only() -> None:
    dead = RedisStore("redis://127.0.0.1:1/0", socket_timeout_s=0.2)
    assert check_rate_limit(dead, RateLimitSettings(requests=1), "k") is None
    with pytest.raises(Exception, match="onnect"):
        dead.set_nx("k", b"v", 1)
