"""Progress events of runs: a Redis stream per run (``REDIS_URL`` set), or a table when not.

Event ids are opaque strings that only grow within one run; a reader passes the last id it
saw (the SSE ``Last-Event-ID``) to get what came after. Events are a convenience for watchers:
losing them (Redis flushed) loses no state, which lives in the run's row.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from sqlalchemy import insert, select
from sqlmodel import col

from service.db import Database
from service.models import MatchRunEvent

log = logging.getLogger(__name__)

STREAM_MAXLEN = 2000
STREAM_TTL_S = 7 * 86_400


@dataclass(frozen=True)
class Event:
    id: str
    kind: str
    data: dict[str, Any]


class EventChannel(Protocol):
    def publish(self, run_id: str, kind: str, data: dict[str, Any]) -> None:
        """Best effort: a failure is logged, never raised into the run."""
        ...

    def read(self, run_id: str, after: str | None, block_s: float) -> list[Event]:
        """Events after ``after`` (all when None), waiting up to ``block_s`` for one."""
        ...

    def valid_id(self, event_id: str) -> bool: ...

    def close(self) -> None: ...


class RedisEventChannel:
    _ID = re.compile(r"^\d{1,20}-\d{1,20}$")

    def __init__(self, url: str, *, prefix: str, socket_timeout_s: float = 5.0) -> None:
        self.prefix = prefix
        self.client = redis.Redis.from_url(
            url, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s
        )

    def _key(self, run_id: str) -> str:
        return f"{self.prefix}run-events:{run_id}"

    def publish(self, run_id: str, kind: str, data: dict[str, Any]) -> None:
        key = self._key(run_id)
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.xadd(key, {"kind": kind, "data": json.dumps(data)}, maxlen=STREAM_MAXLEN)
            pipe.expire(key, STREAM_TTL_S)
            pipe.execute()
        except redis.RedisError:
            log.warning("could not publish a run event", extra={"run_id": run_id}, exc_info=True)

    def read(self, run_id: str, after: str | None, block_s: float) -> list[Event]:
        block_ms = max(1, int(block_s * 1000))
        reply: Any = self.client.xread(
            {self._key(run_id): after or "0-0"}, block=block_ms, count=500
        )
        out = []
        for _key, entries in reply or []:
            for entry_id, fields in entries:
                out.append(
                    Event(
                        id=entry_id.decode(),
                        kind=fields[b"kind"].decode(),
                        data=json.loads(fields[b"data"]),
                    )
                )
        return out

    def valid_id(self, event_id: str) -> bool:
        return bool(self._ID.match(event_id))

    def close(self) -> None:
        self.client.close()


class DatabaseEventChannel:
    """The embedded default: events are rows (the pool's processes share only the database)."""

    _ID = re.compile(r"^\d{1,18}$")

    def __init__(self, db: Database) -> None:
        self.db = db

    def publish(self, run_id: str, kind: str, data: dict[str, Any]) -> None:
        try:
            with self.db.session() as session:
                session.execute(insert(MatchRunEvent).values(run_id=run_id, kind=kind, data=data))
                session.commit()
        except Exception:  # noqa: BLE001 - events are best effort, the run goes on
            log.warning("could not store a run event", extra={"run_id": run_id}, exc_info=True)

    def read(self, run_id: str, after: str | None, block_s: float) -> list[Event]:
        import time

        deadline = time.monotonic() + block_s
        start = int(after) if after else 0
        while True:
            with self.db.session(write=False) as session:
                rows = session.execute(
                    select(MatchRunEvent.id, MatchRunEvent.kind, MatchRunEvent.data)  # type: ignore[call-overload]
                    .where(col(MatchRunEvent.run_id) == run_id, col(MatchRunEvent.id) > start)
                    .order_by(col(MatchRunEvent.id))
                    .limit(500)
                ).all()
            if rows or time.monotonic() >= deadline:
                return [Event(str(r[0]), r[1], r[2]) for r in rows]
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def valid_id(self, event_id: str) -> bool:
        return bool(self._ID.match(event_id))

    def close(self) -> None:
        return None


def make_event_channel(
    redis_url: str | None, *, db: Database, prefix: str, socket_timeout_s: float = 5.0
) -> EventChannel:
    if redis_url:
        return RedisEventChannel(redis_url, prefix=prefix, socket_timeout_s=socket_timeout_s)
    return DatabaseEventChannel(db)
