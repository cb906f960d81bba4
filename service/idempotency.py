"""Idempotent POSTs: a retried request with the same ``Idempotency-Key`` gets the first answer.

The key is scoped by organisation, method and path. The first request reserves it with
``SET NX`` (a *pending* record with a short TTL); the response is then stored in its place for
``ttl_s``. A duplicate arriving while the first is in flight gets 409; one with a different body
gets 422. 5xx answers are not stored, so the client may retry them.

The dependency (:func:`idempotency`) runs after authentication; the middleware
(:class:`IdempotencyMiddleware`) stores whatever response the route produced.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from typing import Annotated, Any

import redis
from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.deps import CurrentOrg, ServicesDep
from service.errors import (
    IdempotencyInFlightError,
    IdempotencyKeyReusedError,
    InvalidFieldError,
    ServiceUnavailableError,
)
from service.store import KeyValueStore

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAY_HEADER = "Idempotent-Replayed"
STATE_KEY = "cdmo_idempotency"
_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
_REPLAYED_HEADERS = ("content-type", "location", "etag")


@dataclass(frozen=True)
class Reservation:
    store_key: str
    fingerprint: str
    ttl_s: int


class IdempotentReplay(Exception):  # noqa: N818 - a control-flow signal, not an error
    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__("replay")
        self.record = record


def _store_key(org_id: str, method: str, path: str, key: str) -> str:
    digest = hashlib.sha256(f"{org_id}\n{method}\n{path}\n{key}".encode()).hexdigest()
    return f"idem:{digest}"


def _check_record(raw: bytes, fingerprint: str) -> None:
    record = json.loads(raw)
    if record.get("fp") != fingerprint:
        raise IdempotencyKeyReusedError(
            "this Idempotency-Key was first used with a different request body"
        )
    if record.get("state") == "done":
        raise IdempotentReplay(record)
    raise IdempotencyInFlightError("a request with this Idempotency-Key is still in progress")


async def idempotency(
    request: Request,
    principal: CurrentOrg,
    services: ServicesDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias=HEADER,
            description="Makes a retried POST safe: the same key returns the first response "
            "and creates nothing new (kept 24 h, per organisation).",
            examples=["3f1c9a52-1b7e-4d0e-9a55-6a1f2e8b7c10"],
        ),
    ] = None,
) -> None:
    if idempotency_key is None:
        return
    if not _KEY_RE.match(idempotency_key):
        raise InvalidFieldError(
            HEADER, "must be 1-255 printable ASCII characters", location="header"
        )
    body = await request.body()
    fingerprint = hashlib.sha256(body).hexdigest()
    store: KeyValueStore = services.store
    cfg = services.settings.idempotency
    key = _store_key(principal.org_id, request.method, request.url.path, idempotency_key)
    pending = json.dumps({"state": "pending", "fp": fingerprint}).encode()
    try:
        reserved = await run_in_threadpool(store.set_nx, key, pending, cfg.pending_ttl_s)
        if not reserved:
            raw = await run_in_threadpool(store.get, key)
            if raw is None:  # expired between the two calls: try once more
                reserved = await run_in_threadpool(store.set_nx, key, pending, cfg.pending_ttl_s)
                if not reserved:
                    raise IdempotencyInFlightError("a request with this key is in progress")
            else:
                _check_record(raw, fingerprint)
    except redis.RedisError as exc:
        raise ServiceUnavailableError("the idempotency store is unavailable; retry later") from exc
    setattr(request.state, STATE_KEY, Reservation(key, fingerprint, cfg.ttl_s))


IdempotencyDep = Depends(idempotency)


async def _replay(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, IdempotentReplay)
    record = exc.record
    headers = dict(record.get("headers", {}))
    headers[REPLAY_HEADER] = "true"
    return Response(
        content=base64.b64decode(record["body"]),
        status_code=int(record["status"]),
        headers=headers,
    )


def install_idempotency(app: FastAPI, store: KeyValueStore) -> None:
    app.add_exception_handler(IdempotentReplay, _replay)
    app.add_middleware(IdempotencyMiddleware, store=store)


class IdempotencyMiddleware:
    """Stores the response of a request that reserved an idempotency key (see module doc)."""

    def __init__(self, app: ASGIApp, store: KeyValueStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        status = 0
        headers: dict[str, str] = {}
        chunks: list[bytes] = []

        async def _send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", []):
                    lname = name.decode("latin-1").lower()
                    if lname in _REPLAYED_HEADERS:
                        headers[lname] = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, _send)
        except BaseException:
            reservation = state.get(STATE_KEY)
            if isinstance(reservation, Reservation):
                await self._release(reservation)
            raise
        reservation = state.get(STATE_KEY)
        if not isinstance(reservation, Reservation):
            return
        if status >= 500 or status == 0:
            await self._release(reservation)
            return
        record = {
            "state": "done",
            "fp": reservation.fingerprint,
            "status": status,
            "headers": headers,
            "body": base64.b64encode(b"".join(chunks)).decode(),
        }
        try:
            await run_in_threadpool(
                self.store.set,
                reservation.store_key,
                json.dumps(record).encode(),
                reservation.ttl_s,
            )
        except redis.RedisError:
            log.warning("could not store idempotent response", exc_info=True)

    async def _release(self, reservation: Reservation) -> None:
        try:
            await run_in_threadpool(self.store.delete, reservation.store_key)
        except redis.RedisError:
            log.warning("could not release idempotency key", exc_info=True)
