"""The lean path: the hottest requests answered without routing, dependency injection or the
middleware stack (README "Under load", "The lean path").

:class:`HotPath` is the outermost ASGI middleware (PostgreSQL only; ``CDMO_HTTP__LEAN_PATH``).
It recognises four request shapes (``GET /v1/projects/{id}``, ``GET /v1/projects`` with at
most ``limit`` and ``cursor``, ``PATCH /v1/listings/{id}``, ``POST /v1/projects``) and, for
each, does what the usual path does: the request id (header and log binding), the access line
and the metrics, the API key from the authenticator's cache, the rate limit, a request slot
(503 + Retry-After when none comes), the body read and parsed as FastAPI does, the
repository's own statement prepared on a raw psycopg connection (:class:`service.db.RawReads`)
and the answer built by the route's own function. Anything it does not handle cheaply it
hands over to the FastAPI app: an id that is not one, a query or header it does not know, no
key or one not in the cache, a row not found (404), a failed check (the one statement wrote
nothing), a database error. So every error is still answered in one place. What it decided
before handing over travels with the request: the rate limit (``AUTHENTICATED_STATE``:
counted once), the request id, a write's failed statement (``AT_ONCE_TRIED_STATE``: not sent
twice), the body it read (replayed).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
import structlog
from pydantic import BaseModel, ValidationError
from sqlalchemy import ColumnElement, true
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.api import ListingUpdate, ProjectCreate
from service import idempotency
from service import repositories as repo
from service.auth import Principal
from service.db import raw_statement
from service.deps import ID_PATTERN, has_nul, parse_if_match_or_none
from service.errors import (
    ApiError,
    InvalidFieldError,
    ServiceUnavailableError,
    api_error_response,
)
from service.middleware import AUTHENTICATED_STATE, bearer_token
from service.observability import REQUEST_ID_HEADER, REQUEST_ID_STATE, log_access, request_id
from service.pagination import DEFAULT_LIMIT, MAX_LIMIT, PageParams, decode_cursor
from service.routes.listings import patched_answer
from service.routes.projects import created_answer, page_answer, project_answer
from service.runtime import Services
from service.transactions import AT_ONCE_TRIED_STATE

_ID = re.compile(ID_PATTERN.removeprefix("^").removesuffix("$"))  # fullmatch: no "\n" at the end
_PROJECTS = "/v1/projects"
_PROJECT = "/v1/projects/"
_LISTING = "/v1/listings/"
_LIMIT = re.compile(rb"[1-9][0-9]{0,2}")
_CURSOR = re.compile(rb"[A-Za-z0-9_-]{1,200}")  # as we make them: nothing to unquote
_REQUEST_ID = REQUEST_ID_HEADER.lower().encode()
_WATCHED = frozenset(
    {b"content-length", b"content-type", b"transfer-encoding", b"if-match", b"idempotency-key"}
)
BODY_MAX = 8192
"""Bodies the lean path reads (declared with Content-Length, JSON); larger: the usual path."""


@dataclass
class _Request:
    """What an endpoint of the lean path gets: the caller, the path's argument, the headers
    it watches (once each), and the body (for writes)."""

    principal: Principal
    arg: Any
    headers: dict[bytes, bytes]
    state: dict[str, Any]
    body: bytes = b""

    def wrote_nothing(self) -> None:
        """The write's one statement wrote nothing: the usual path does not send it again."""
        self.state[AT_ONCE_TRIED_STATE] = True


ModelT = TypeVar("ModelT", bound=BaseModel)
Endpoint = Callable[["HotPath", _Request], Awaitable[Response | None]]


class HotPath:
    def __init__(self, app: ASGIApp, services: Services) -> None:
        assert services.db.raw is not None, "the lean path is PostgreSQL's"
        self.app = app
        self.services = services
        self.raw = services.db.raw
        self.body_timeout_s = services.settings.http.body_timeout_s
        self._metrics: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            found = self._route(scope)
            if found is not None:
                handed_over = await self._serve(scope, receive, send, *found)
                if handed_over is None:
                    return
                receive = handed_over
        await self.app(scope, receive, send)

    @staticmethod
    def _route(scope: Scope) -> tuple[Endpoint, str, Any, bool] | None:
        """The endpoint of a request shape the lean path serves, its route template, the
        path's argument, and whether it has a body; None for anything else."""
        method, path, query = scope["method"], scope["path"], scope["query_string"]
        if method == "GET":
            if path == _PROJECTS:
                page = _page(query)
                return None if page is None else (_list_projects, _PROJECTS, page, False)
            if not query and path.startswith(_PROJECT) and _ID.fullmatch(path, len(_PROJECT)):
                arg = path[len(_PROJECT) :]
                return _get_project, "/v1/projects/{project_id}", arg, False
        elif method == "POST":
            if path == _PROJECTS and not query:
                return _post_project, _PROJECTS, None, True
        elif method == "PATCH":
            if not query and path.startswith(_LISTING) and _ID.fullmatch(path, len(_LISTING)):
                arg = path[len(_LISTING) :]
                return _patch_listing, "/v1/listings/{listing_id}", arg, True
        return None

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        endpoint: Endpoint,
        route: str,
        arg: Any,
        has_body: bool,
    ) -> Receive | None:
        """Answer the request with ``endpoint`` (None), or hand it over: the ``receive`` for
        the usual path (the original, or one that replays a body read here)."""
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name in _WATCHED:
                if name in headers:
                    return receive  # a watched header twice: the usual path decides
                headers[name] = value
        if b"transfer-encoding" in headers:
            return receive
        declared = headers.get(b"content-length", b"0")
        if has_body:
            if headers.get(b"content-type") != b"application/json" or not (
                declared.isdigit() and 0 < int(declared) <= BODY_MAX
            ):
                return receive
        elif declared != b"0":
            return receive  # a body the usual path reads (and limits)
        token = bearer_token(scope)
        auth = self.services.auth
        key_hash = None if token is None else auth.key_hash(token)
        principal = None if key_hash is None else auth.cached(key_hash)
        if principal is None:
            return receive  # no key, or one the usual path must look up (and then caches)
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
                return receive
            state[AUTHENTICATED_STATE] = (principal, limits)
            request = _Request(principal, arg, headers, state)
            if has_body:
                request.body, complete = await self._read_body(receive)
                receive = _replay(request.body, complete, receive)
                if not complete:
                    return receive
            try:
                async with self.services.db.slots.hold():
                    response = await endpoint(self, request)
            except ServiceUnavailableError as exc:  # no slot in time: 503 + Retry-After
                response = api_error_response(exc, scope["path"])
            except ApiError:
                return receive  # a check refused it: the usual path answers
            except psycopg.Error:
                return receive  # the usual path tries again, and answers 503 if it fails too
            if response is None:
                return receive
            raw_headers = response.raw_headers
            if limits is not None:
                raw_headers += [
                    (k.lower().encode(), v.encode()) for k, v in limits.headers().items()
                ]
            raw_headers.append((_REQUEST_ID, rid.encode()))
            await response(scope, receive, send)
            self._observe(scope["method"], route, response.status_code, start)
            log_access(scope, route, response.status_code, start)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)
        return None

    async def _read_body(self, receive: Receive) -> tuple[bytes, bool]:
        """The body (at most its declared BODY_MAX bytes), and whether all of it came in
        time; when not, the usual path gets what came and waits for the rest (its own
        limits and timeout then answer)."""
        chunks: list[bytes] = []
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return b"".join(chunks), False
                    chunks.append(message.get("body", b""))
                    if not message.get("more_body", False):
                        return b"".join(chunks), True
        except TimeoutError:
            return b"".join(chunks), False

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


def _replay(body: bytes, complete: bool, receive: Receive) -> Receive:
    """``receive`` for the usual path after the lean path read ``body``: the body first."""
    pending = [{"type": "http.request", "body": body, "more_body": not complete}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


async def _get_project(hot: HotPath, request: _Request) -> Response | None:
    row = await repo.projects.raw_read_project(
        raw=hot.raw, principal=request.principal, project_id=request.arg
    )
    return None if row is None else project_answer(row, request.principal).response()


async def _list_projects(hot: HotPath, request: _Request) -> Response:
    rows, cursor = await repo.projects.raw_read_projects(
        raw=hot.raw, principal=request.principal, page=request.arg
    )
    return page_answer(rows, cursor, request.principal).response()


async def _patch_listing(hot: HotPath, request: _Request) -> Response | None:
    """routes.listings.patch_listing's one statement: None (the usual path) wherever that
    route would not write at once or its statement wrote nothing."""
    principal = request.principal
    if not (principal.is_cdmo or principal.is_operator):
        return None  # 403
    expected = parse_if_match_or_none(_text(request.headers.get(b"if-match")))
    patch = _body(ListingUpdate, request.body)
    if not expected or patch is None:
        return None
    at_once = repo.listings.patch_at_once(
        principal=principal, listing_id=request.arg, patch=patch, expected=expected
    )
    if at_once is None:
        return None
    build, params = at_once
    stmt = raw_statement(build(true()))
    rows = await hot.raw.rows(stmt, stmt.params(**params))
    if not rows:
        request.wrote_nothing()
        return None
    return patched_answer(rows[0]).response()


async def _post_project(hot: HotPath, request: _Request) -> Response | None:
    """routes.projects.create_project's one statement, with its Idempotency-Key claimed in
    it: None (the usual path) wherever that route would not write at once (a replay
    included) or its statement wrote nothing."""
    principal = request.principal
    project_in = _body(ProjectCreate, request.body)
    if not (principal.is_maker or principal.is_operator) or project_in is None:
        return None
    gate: ColumnElement[bool] = true()
    claim_params: dict[str, Any] = {}
    header = _text(request.headers.get(b"idempotency-key"))
    project, build, params = repo.projects.create_at_once(
        principal=principal, project_in=project_in
    )
    answer = created_answer(project)
    if header is not None:
        ttl_s = hot.services.settings.idempotency.ttl_s
        key = idempotency.pending(principal.org_id, "POST", _PROJECTS, header, request.body, ttl_s)
        claimed = key.claim_and_record(answer)
        if claimed is None:
            return None
        gate, claim_params = claimed
    stmt = raw_statement(build(gate))
    rows = await hot.raw.rows(stmt, stmt.params(**params, **claim_params))
    if not rows:
        request.wrote_nothing()
        return None
    return answer.response()


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _body(model: type[ModelT], body: bytes) -> ModelT | None:
    """The body as FastAPI reads it for ``model`` (json.loads, then validation in Python
    mode, NUL characters refused); None where the usual path would answer an error."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or has_nul(data):
        return None
    try:
        return model.model_validate(data)
    except ValidationError:
        return None


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
