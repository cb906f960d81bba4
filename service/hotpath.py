"""The lean path: the hottest requests answered without routing, dependency injection or the
middleware stack (README "Under load", "The lean path").

:class:`HotPath` is the outermost ASGI middleware (PostgreSQL only; ``CDMO_HTTP__LEAN_PATH``).
It recognises a few exact request shapes and, for each, does what the usual path does for it:
the request id (header and log binding), the access line and the metrics, the API key from
the authenticator's cache, the rate limit, a request slot (503 + Retry-After when none comes),
one prepared statement on a raw psycopg connection (:class:`service.db.RawReads`, the
repository's own statement), and the answer built by the route's own function. Anything it
does not handle cheaply it hands over to the FastAPI app untouched: an id that is not one, a
query string, a body, no key or one not in the cache, a row not found (404), a database error.
So every error is still answered in one place. A request it hands over after counting it
against the rate limit carries that decision along (``AUTHENTICATED_STATE``): it is counted
once.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import structlog
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service import repositories as repo
from service.auth import Principal
from service.deps import ID_PATTERN
from service.errors import (
    ApiError,
    InvalidFieldError,
    ServiceUnavailableError,
    api_error_response,
)
from service.middleware import AUTHENTICATED_STATE, bearer_token
from service.observability import REQUEST_ID_HEADER, REQUEST_ID_STATE, log_access, request_id
from service.pagination import DEFAULT_LIMIT, MAX_LIMIT, PageParams, decode_cursor
from service.routes.projects import page_answer, project_answer
from service.runtime import Services

_ID = re.compile(ID_PATTERN.removeprefix("^").removesuffix("$"))  # fullmatch: no "\n" at the end
_PROJECTS = "/v1/projects"
_PROJECT = "/v1/projects/"
_PROJECT_ROUTE = "/v1/projects/{project_id}"
_LIMIT = re.compile(rb"[1-9][0-9]{0,2}")
_CURSOR = re.compile(rb"[A-Za-z0-9_-]{1,200}")  # as we make them: nothing to unquote
_REQUEST_ID = REQUEST_ID_HEADER.lower().encode()

Endpoint = Callable[["HotPath", Principal, Any], Awaitable[Response | None]]


class HotPath:
    def __init__(self, app: ASGIApp, services: Services) -> None:
        assert services.db.raw is not None, "the lean path is PostgreSQL's"
        self.app = app
        self.services = services
        self.raw = services.db.raw
        self._metrics: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            query: bytes = scope["query_string"]
            if path == _PROJECTS:
                page = _page(query)
                if page is not None and await self._serve(
                    scope, receive, send, _list_projects, _PROJECTS, page
                ):
                    return
            elif not query and path.startswith(_PROJECT) and _ID.fullmatch(path, len(_PROJECT)):
                if await self._serve(
                    scope, receive, send, _get_project, _PROJECT_ROUTE, path[len(_PROJECT) :]
                ):
                    return
        await self.app(scope, receive, send)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, endpoint: Endpoint, route: str, arg: Any
    ) -> bool:
        """Answer the request with ``endpoint``; False: hand it over (nothing was sent)."""
        for name, value in scope["headers"]:
            if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
                return False  # a body: the usual path reads (and limits) it
        token = bearer_token(scope)
        auth = self.services.auth
        key_hash = None if token is None else auth.key_hash(token)
        principal = None if key_hash is None else auth.cached(key_hash)
        if principal is None:
            return False  # no key, or one the usual path must look up (and then caches)
        start = time.perf_counter()
        state = scope.setdefault("state", {})
        rid = state[REQUEST_ID_STATE] = request_id(scope)
        # the request id bound to the request's log lines, as RequestContextMiddleware does
        # (the tokens reset by hand: cheaper than bound_contextvars' generator)
        tokens = structlog.contextvars.bind_contextvars(request_id=rid)
        try:
            try:
                limits = await self.services.limiter.check_async(principal.key_id)
            except ApiError as exc:  # 429: answered by the usual path, counted once
                state[AUTHENTICATED_STATE] = exc
                return False
            state[AUTHENTICATED_STATE] = (principal, limits)
            try:
                async with self.services.db.slots.hold():
                    response = await endpoint(self, principal, arg)
            except ServiceUnavailableError as exc:  # no slot in time: 503 + Retry-After
                response = api_error_response(exc, scope["path"])
            except psycopg.Error:
                return False  # the usual path tries again, and answers 503 if it fails too
            if response is None:
                return False
            headers = response.raw_headers
            if limits is not None:
                headers += [(k.lower().encode(), v.encode()) for k, v in limits.headers().items()]
            headers.append((_REQUEST_ID, rid.encode()))
            await response(scope, receive, send)
            self._observe(scope["method"], route, response.status_code, start)
            log_access(scope, route, response.status_code, start)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)
        return True

    def _observe(self, method: str, route: str, status: int, start: float) -> None:
        """The metrics of service.metrics.MetricsMiddleware, their labelled children kept."""
        children = self._metrics.get((method, route, status))
        if children is None:
            metrics = self.services.metrics
            children = self._metrics[(method, route, status)] = (
                metrics.requests.labels(method, route, str(status)),
                metrics.latency.labels(method, route),
            )
        children[0].inc()
        children[1].observe(time.perf_counter() - start)


async def _get_project(hot: HotPath, principal: Principal, project_id: str) -> Response | None:
    row = await repo.projects.raw_read_project(
        raw=hot.raw, principal=principal, project_id=project_id
    )
    return None if row is None else project_answer(row, principal).response()


def _page(query: bytes) -> PageParams | None:
    """The page a list's query asks for, when it names nothing but ``limit`` and ``cursor``
    (once each, valid); None otherwise (a filter, anything odd: the usual path)."""
    limit, after = DEFAULT_LIMIT, None
    seen: set[bytes] = set()
    for part in query.split(b"&") if query else ():
        name, _, value = part.partition(b"=")
        if name in seen:
            return None
        seen.add(name)
        if name == b"limit" and _LIMIT.fullmatch(value) and int(value) <= MAX_LIMIT:
            limit = int(value)
        elif name == b"cursor" and _CURSOR.fullmatch(value):
            try:
                after = decode_cursor(value.decode("ascii"))
            except (InvalidFieldError, UnicodeDecodeError):
                return None
        else:
            return None
    return PageParams(limit=limit, after=after)


async def _list_projects(hot: HotPath, principal: Principal, page: PageParams) -> Response:
    rows, cursor = await repo.projects.raw_read_projects(
        raw=hot.raw, principal=principal, page=page
    )
    return page_answer(rows, cursor, principal).response()
