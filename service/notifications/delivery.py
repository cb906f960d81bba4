"""The deliverer: POSTs due events to their organisation's webhook, signed, retried with
exponential backoff, every attempt recorded in ``webhook_deliveries``.

Who delivers:

* with Redis, the engine: ``deliver`` housekeeping jobs run :meth:`Deliverer.deliver_due` in
  the workers. They are sent by ``cdmo scheduler`` every ``poll_interval_s`` (retries, and
  anything a kick missed) and, for fresh events, by the :class:`Announcer` of the process
  that committed them: committed ids go to an in-process queue (never blocking the request);
  the announcer's thread appends them to the stream ``<prefix>events`` (the events' log) and
  sends one ``deliver`` job per batch. The API processes deliver nothing themselves.
* embedded (no Redis): a :class:`Deliverer` thread in the API process, woken by the queue.

Either way the table is the truth: each round takes the due rows with ``FOR UPDATE SKIP
LOCKED`` (several deliverers never send one event twice at once).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import threading
import time
from typing import Any, Self

import httpx
import redis
from sqlmodel import col, select

from schemas.api import DeliveryStatus
from service.config import NotificationSettings
from service.db import Database
from service.models import Organisation, OrgEvent, WebhookDelivery, utcnow
from service.notifications import outbox
from service.notifications.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, sign

log = logging.getLogger(__name__)

BATCH = 50


def webhook_body(row: OrgEvent) -> bytes:
    return json.dumps(
        {
            "id": row.id,
            "type": row.kind,
            "created_at": row.created_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
            "data": row.data,
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()


def backoff_s(attempt: int, cfg: NotificationSettings) -> float:
    """Wait after the ``attempt``-th failure: base x 2^(attempt-1), capped."""
    return float(min(cfg.backoff_max_s, cfg.backoff_base_s * 2 ** (attempt - 1)))


class _WokenThread:
    """A daemon thread that runs :meth:`_round` whenever :meth:`wake` hands it event ids (the
    outbox calls it after a commit: only a queue put on the committing thread), and at least
    every ``poll_interval_s``. Subclasses give :meth:`_round` and :meth:`_close`."""

    def __init__(self, name: str, poll_interval_s: float, join_timeout_s: float) -> None:
        self._poll_interval_s = poll_interval_s
        self._join_timeout_s = join_timeout_s
        self._local: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def wake(self, event_ids: list[str]) -> None:
        for event_id in event_ids:
            self._local.put_nowait(event_id)

    def _take(self) -> list[str]:
        """The ids woken since the last round (waiting up to the poll interval for one)."""
        try:
            first = self._local.get(timeout=self._poll_interval_s)
        except queue.Empty:
            return []
        ids = [first]
        while not self._local.empty():  # drain: one round serves every wake-up so far
            ids.append(self._local.get_nowait())
        return [i for i in ids if i]  # "" only unblocks stop()

    def _round(self, event_ids: list[str]) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.is_set():
            ids = self._take()
            if self._stop.is_set():
                break
            try:
                self._round(ids)
            except Exception:  # noqa: BLE001 - a Redis or database blip: try again shortly
                log.warning("%s round failed", self._thread.name, exc_info=True)
                self._stop.wait(self._poll_interval_s)

    def start(self) -> Self:
        outbox.add_wake(self.wake)
        self._thread.start()
        return self

    def stop(self) -> None:
        outbox.remove_wake(self.wake)
        self._stop.set()
        self._local.put_nowait("")  # unblock the wait
        self._thread.join(timeout=self._join_timeout_s)
        self._close()


class Deliverer(_WokenThread):
    def __init__(self, db: Database, cfg: NotificationSettings) -> None:
        super().__init__(
            "webhook-deliverer", cfg.poll_interval_s, cfg.poll_interval_s + cfg.timeout_s + 5
        )
        self.db, self.cfg = db, cfg
        self._http = httpx.Client(timeout=cfg.timeout_s, follow_redirects=False)

    def _round(self, event_ids: list[str]) -> None:
        self.deliver_due()  # every due event, woken or retried

    def _close(self) -> None:
        self.close()

    # --- delivery -----------------------------------------------------------------------

    def deliver_due(self, now: dt.datetime | None = None) -> int:
        """Attempt every due event once (each in its own transaction); returns attempts."""
        done = 0
        for _ in range(20):  # bounded: at most 20 batches per round
            attempted = self._deliver_batch(now)
            done += attempted
            if attempted < BATCH:
                break
        return done

    def _deliver_batch(self, now: dt.datetime | None) -> int:
        attempted = 0
        with self.db.session() as session:
            ids = session.exec(
                select(OrgEvent.id)
                .where(
                    OrgEvent.status == DeliveryStatus.PENDING.value,
                    col(OrgEvent.next_attempt_at) <= (now or utcnow()),
                )
                .order_by(col(OrgEvent.next_attempt_at))
                .limit(BATCH)
            ).all()
        for event_id in ids:
            if self._stop.is_set():
                break
            if self._deliver_one(event_id):
                attempted += 1
        return attempted

    def _deliver_one(self, event_id: str) -> bool:
        with self.db.session() as session:
            stmt = (
                select(OrgEvent)
                .where(OrgEvent.id == event_id, OrgEvent.status == DeliveryStatus.PENDING.value)
                .with_for_update(skip_locked=True)
            )
            row = session.exec(stmt).first()
            if row is None:  # delivered meanwhile, or another deliverer holds it
                return False
            org = session.get(Organisation, row.org_id)
            if org is None or not org.webhook_url or not org.webhook_secret:
                row.status = DeliveryStatus.NO_WEBHOOK.value
                row.next_attempt_at = None
                session.add(row)
                session.commit()
                return False
            body = webhook_body(row)
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "cdmo-market-webhooks/1",
                EVENT_ID_HEADER: row.id,
                SIGNATURE_HEADER: sign(org.webhook_secret, body),
            }
            status_code: int | None = None
            error: str | None = None
            t0 = time.perf_counter()
            try:
                response = self._http.post(org.webhook_url, content=body, headers=headers)
                status_code = response.status_code
                if not 200 <= status_code < 300:
                    error = f"HTTP {status_code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:500]
            elapsed_ms = (time.perf_counter() - t0) * 1000
            row.attempts += 1
            row.last_status_code = status_code
            row.last_error = error
            now = utcnow()
            if error is None:
                row.status = DeliveryStatus.DELIVERED.value
                row.delivered_at = now
                row.next_attempt_at = None
            elif row.attempts >= self.cfg.max_attempts:
                row.status = DeliveryStatus.FAILED.value
                row.next_attempt_at = None
            else:
                row.next_attempt_at = now + dt.timedelta(seconds=backoff_s(row.attempts, self.cfg))
            session.add(row)
            session.add(
                WebhookDelivery(
                    event_id=row.id,
                    attempt=row.attempts,
                    url=org.webhook_url,
                    status_code=status_code,
                    error=error,
                    duration_ms=round(elapsed_ms, 3),
                    at=now,
                )
            )
            session.commit()
            if error is not None:
                log.info("webhook delivery failed (%s), attempt %d", error, row.attempts)
            return True

    def close(self) -> None:
        """A deliverer used without its thread (driven by jobs)."""
        self._http.close()


def make_deliverer(db: Database, settings: Any) -> Deliverer:
    """Embedded mode: ``.start()`` it (a thread woken by this process's queue). With Redis:
    do not start it; ``deliver`` jobs call :meth:`Deliverer.deliver_due`."""
    return Deliverer(db, settings.notifications)


class Announcer(_WokenThread):
    """Redis mode, in every process that commits events (API and workers): moves committed
    event ids onto the stream ``<prefix>events`` and kicks one ``deliver`` job per batch.
    Only a queue put happens on the committing thread."""

    def __init__(
        self,
        redis_url: str,
        cfg: NotificationSettings,
        *,
        prefix: str,
        kick: Any,
        socket_timeout_s: float = 2.0,
    ) -> None:
        super().__init__("event-announcer", cfg.poll_interval_s, 5)
        self.cfg = cfg
        self.kick = kick
        self.stream = prefix + "events"
        self._redis = redis.Redis.from_url(
            redis_url, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s
        )

    def announce(self, ids: list[str]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for event_id in ids:
            pipe.xadd(
                self.stream, {"event_id": event_id}, maxlen=self.cfg.stream_maxlen, approximate=True
            )
        pipe.execute()
        self.kick()

    def _round(self, event_ids: list[str]) -> None:
        if event_ids:  # a Redis blip: the scheduler's poll delivers them anyway
            self.announce(event_ids)

    def _close(self) -> None:
        self._redis.close()
