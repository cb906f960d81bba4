"""ASGI middleware of our own: the request body limit and authentication, both before any
body is read (answered as problem+json)."""

from __future__ import annotations

import asyncio

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth import Principal
from service.errors import (
    BACKEND_UNAVAILABLE,
    RETRY_AFTER_S,
    ApiError,
    UnauthenticatedError,
    api_error_response,
    problem_response,
)
from service.runtime import Services

API_PREFIX = "/v1/"
PRINCIPAL_STATE = "principal"
AUTHENTICATED_STATE = "authenticated"
"""Where the lean path (service.hotpath) leaves what it decided of a request it hands over
after counting it against the rate limit: ``(principal, limits)`` or the error to answer, so
the request is counted once and answered here."""


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class BodyTimeout(HTTPException):
    def __init__(self, timeout_s: float) -> None:
        super().__init__(408, f"the request body did not arrive within {timeout_s:g} s")


class BodyLimitMiddleware:
    """413 for bodies over ``max_bytes``: at once when Content-Length says so, otherwise as
    soon as the streamed body passes the limit (FastAPI re-raises it as an HTTPException
    while reading the body, before any route code runs)."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 10.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
        if declared is not None and declared > self.max_bytes:
            request = Request(scope)
            response = problem_response(
                "payload-too-large",
                f"request body of {declared} bytes exceeds the limit of {self.max_bytes}",
                instance=request.url.path,
            )
            await response(scope, receive, send)
            return
        received = 0
        body_done = False
        deadline: float | None = None

        async def _receive() -> Message:
            # The whole body must arrive within timeout_s of the first read: a client that
            # declares a body and never sends it (or trickles it) gets 408, not a held socket.
            nonlocal received, body_done, deadline
            if body_done:
                return await receive()  # e.g. waiting for a disconnect: no deadline
            loop = asyncio.get_running_loop()
            if deadline is None:
                deadline = loop.time() + self.timeout_s
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise BodyTimeout(self.timeout_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        await self.app(scope, _receive, send)


def bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


class AuthenticationMiddleware:
    """Every ``/v1/`` request must carry a valid API key, checked before anything reads or
    parses its body (an unauthenticated POST with a malformed body gets 401, not 400), and is
    counted against the key's rate limit (429 before the body is read, too). The
    caller is left in ``request.state.principal``; the key is resolved through the
    :class:`service.auth.Authenticator` cache, and on a miss in a request slot of its own."""

    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        decided = scope.get("state", {}).pop(AUTHENTICATED_STATE, None)
        try:
            if isinstance(decided, ApiError):
                raise decided
            if decided is not None:
                principal, limits = decided
            else:
                principal = await self._principal(scope)
                limits = await self.services.limiter.check_async(principal.key_id)
        except ApiError as exc:
            await api_error_response(exc, scope["path"])(scope, receive, send)
            return
        except BACKEND_UNAVAILABLE:
            response = problem_response(
                "service-unavailable",
                "the database is unavailable; retry shortly",
                instance=scope["path"],
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})[PRINCIPAL_STATE] = principal
        if limits is None:
            await self.app(scope, receive, send)
            return
        extra = [(k.lower().encode(), v.encode()) for k, v in limits.headers().items()]

        async def _send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, _send)

    async def _principal(self, scope: Scope) -> Principal:
        token = bearer_token(scope)
        if token is None:
            raise UnauthenticatedError("missing API key: send Authorization: Bearer <key>")
        auth, db = self.services.auth, self.services.db
        key_hash = auth.key_hash(token)
        principal = None if key_hash is None else auth.cached(key_hash)
        if principal is None and key_hash is not None:
            async with db.slots.hold():
                principal = await run_in_threadpool(
                    auth.resolve, key_hash, lambda: db.session(write=False)
                )
        if principal is None:
            raise UnauthenticatedError("unknown or revoked API key")
        return principal
