"""Structured logs: one JSON object per line, with the request id (and run id) on every line.

Every logger goes through structlog's ``ProcessorFormatter`` on the root handler: our modules'
``logging.getLogger(__name__)``, uvicorn, alembic, and structlog loggers alike. Each line gets

* what is bound in structlog's context variables: ``request_id`` (bound per request by
  :class:`RequestContextMiddleware`), ``run_id`` (bound by :func:`bind_run` in workers);
* the ``extra={...}`` fields of a standard-library call, e.g.
  ``log.info("run claimed", extra={"run_id": run.id})``;
* ``timestamp`` (UTC, ISO 8601), ``level``, ``logger``, ``event`` and, on errors, ``exception``.

``CDMO_LOG_FORMAT=json`` (the default in production, Compose, Kubernetes and ``make stack``)
renders JSON; ``console`` renders aligned, coloured lines for a terminal.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
_HANDLER_NAME = "cdmo-structlog"
_PROBES = frozenset({"/health", "/ready", "/metrics"})
_access_log = structlog.get_logger("cdmo.access")


def _drop_color_message(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """uvicorn passes a coloured copy of each message as an ``extra``; keep the plain one."""
    event.pop("color_message", None)
    return event


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        _drop_color_message,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def configure_logging(level: str = "INFO", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Route every log record of the process through structlog (idempotent); lines go to
    ``stream`` (standard error by default)."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    # Replace our handler from an earlier call and plain default handlers; keep others
    # (pytest's capture handlers, a host application's own).
    root.handlers = [
        h
        for h in root.handlers
        if h.get_name() != _HANDLER_NAME and type(h) is not logging.StreamHandler
    ]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn installs its own handlers; send its records through ours instead. Its access log
    # is replaced by ours (route template, duration, request id), so it is silenced.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


@contextmanager
def bind_run(run_id: str) -> Iterator[None]:
    """Put ``run_id`` on every log line written inside the block (worker side)."""
    with structlog.contextvars.bound_contextvars(run_id=run_id):
        yield


REQUEST_ID_STATE = "request_id"


def request_id(scope: Scope) -> str:
    """The request's id: the one already given to it (by the lean path, service.hotpath, before
    it handed the request over), the client's ``X-Request-ID`` when sane, or a new one."""
    given = scope.get("state", {}).get(REQUEST_ID_STATE)
    if given is not None:
        return str(given)
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate = value.decode("latin-1").strip()
            if _VALID_REQUEST_ID.match(candidate):
                return candidate
            break
    return uuid.uuid4().hex


def log_access(scope: Scope, route: str | None, status: int, start: float) -> None:
    """The one access line of a request (inside its ``request_id`` binding)."""
    if status >= 500:
        level = logging.ERROR
    elif route in _PROBES and status < 400:
        level = logging.DEBUG  # probes every few seconds would drown the log
    else:
        level = logging.INFO
    _access_log.log(
        level,
        "request",
        method=scope["method"],
        path=scope["path"],
        route=route,
        status=status,
        duration_ms=round((time.perf_counter() - start) * 1000, 2),
    )


class RequestContextMiddleware:
    """Request id in and out, bound to every log line of the request, and one access line.

    A client's ``X-Request-ID`` is kept when it is a sane token (1-128 visible characters);
    otherwise one is generated. The response carries it back, so a client can quote it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        header = (REQUEST_ID_HEADER.lower().encode(), rid.encode())
        status = 500
        start = time.perf_counter()

        async def _send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=rid):
            try:
                await self.app(scope, receive, _send)
            finally:
                log_access(scope, getattr(scope.get("route"), "path", None), status, start)
