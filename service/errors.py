"""The one place where errors become HTTP responses: RFC 9457 ``application/problem+json``.

Code below the routes raises :class:`ApiError` subclasses (or lets FastAPI raise its
validation errors); the handlers installed by :func:`install_error_handlers` turn each into a
problem document with a stable ``type``. Unexpected exceptions are logged with their traceback
and answered with a bare 500 problem; they are never dressed up as client errors.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import redis
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "/problems/"


@dataclass(frozen=True)
class ProblemType:
    slug: str
    status: int
    title: str
    description: str

    @property
    def uri(self) -> str:
        return PROBLEM_BASE + self.slug


_TYPES = [
    ProblemType(
        "validation-error",
        422,
        "Invalid request",
        "One or more values are invalid; `errors` has one entry per value.",
    ),
    ProblemType("malformed-json", 400, "Malformed JSON", "The request body is not valid JSON."),
    ProblemType("bad-request", 400, "Bad request", "The request could not be understood."),
    ProblemType(
        "unsupported-media-type",
        415,
        "Unsupported media type",
        "Request bodies must be `application/json`.",
    ),
    ProblemType(
        "request-timeout",
        408,
        "Request timeout",
        "The request body did not arrive in time; send it whole and promptly.",
    ),
    ProblemType(
        "payload-too-large",
        413,
        "Payload too large",
        "The request body exceeds the configured limit.",
    ),
    ProblemType(
        "unauthenticated",
        401,
        "Unauthenticated",
        "Send a valid API key as `Authorization: Bearer <key>`.",
    ),
    ProblemType(
        "forbidden", 403, "Forbidden", "Your organisation's role may not perform this operation."
    ),
    ProblemType(
        "not-found", 404, "Not found", "No such resource, or it belongs to another tenant."
    ),
    ProblemType(
        "method-not-allowed",
        405,
        "Method not allowed",
        "The resource does not support this method.",
    ),
    ProblemType(
        "conflict", 409, "Conflict", "The request conflicts with existing data (e.g. a duplicate)."
    ),
    ProblemType(
        "invalid-state",
        409,
        "Invalid state",
        "The resource's current state does not allow this change.",
    ),
    ProblemType(
        "idempotency-key-reused",
        422,
        "Idempotency-Key reused",
        "This Idempotency-Key was used with a different request body.",
    ),
    ProblemType(
        "precondition-failed",
        412,
        "Precondition failed",
        "If-Match does not match the current version: re-read and retry.",
    ),
    ProblemType(
        "precondition-required",
        428,
        "Precondition required",
        'Updates need `If-Match: "<version>"` from a previous read.',
    ),
    ProblemType(
        "rate-limited",
        429,
        "Too many requests",
        "The API key exceeded its request quota; see Retry-After.",
    ),
    ProblemType(
        "too-many-runs",
        429,
        "Too many match runs",
        "The deployment's cap of queued and running match runs is reached; retry when one "
        "finishes (see Retry-After).",
    ),
    ProblemType(
        "capacity-shortfall",
        409,
        "Not enough capacity",
        "Accepting would over-reserve the site's listings; `shortfalls` lists each process "
        "and month that is short, by how many hours. Nothing was changed.",
    ),
    ProblemType(
        "capacity-held",
        409,
        "Capacity held by deals",
        "The listing's capacity (or reserved hours) cannot go below the hours held by accepted "
        "deals (`held_hours`) or reserved (`reserved_hours`).",
    ),
    ProblemType(
        "service-unavailable",
        503,
        "Service unavailable",
        "A backing service (database or Redis) is not reachable.",
    ),
    ProblemType(
        "internal-error", 500, "Internal server error", "An unexpected error; it has been logged."
    ),
]
PROBLEM_TYPES: dict[str, ProblemType] = {t.slug: t for t in _TYPES}

_STATUS_SLUGS = {
    400: "bad-request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    408: "request-timeout",
    409: "conflict",
    412: "precondition-failed",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation-error",
    428: "precondition-required",
    429: "rate-limited",
    503: "service-unavailable",
}


class ApiError(Exception):
    """An error with a problem type. Subclasses fix the type; instances carry the detail."""

    problem: ClassVar[str] = "bad-request"

    def __init__(
        self,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        errors: Sequence[Mapping[str, Any]] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})
        self.errors = list(errors) if errors is not None else None
        self.extensions = extensions


class NotFoundError(ApiError):
    problem = "not-found"


class PermissionDeniedError(ApiError):
    problem = "forbidden"


class UnauthenticatedError(ApiError):
    problem = "unauthenticated"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="cdmo-market"'})


class ConflictError(ApiError):
    problem = "conflict"


class InvalidStateError(ApiError):
    problem = "invalid-state"


class CapacityShortfallError(ApiError):
    problem = "capacity-shortfall"


class CapacityHeldError(ApiError):
    problem = "capacity-held"


class PreconditionRequiredError(ApiError):
    problem = "precondition-required"


class PreconditionFailedError(ApiError):
    problem = "precondition-failed"


class RateLimitedError(ApiError):
    problem = "rate-limited"


class TooManyRunsError(ApiError):
    problem = "too-many-runs"


class IdempotencyInFlightError(ApiError):
    problem = "idempotency-in-flight"


class IdempotencyKeyReusedError(ApiError):
    problem = "idempotency-key-reused"


class ServiceUnavailableError(ApiError):
    problem = "service-unavailable"


class PayloadTooLargeError(ApiError):
    problem = "payload-too-large"


class InvalidFieldError(ApiError):
    """A value that passed schema validation but is wrong in context (e.g. an unknown id)."""

    problem = "validation-error"

    def __init__(self, field: str, message: str, *, location: str = "body", code: str = "invalid"):
        super().__init__(
            f"{field}: {message}",
            errors=[_field_error(location, field.split(".") if field else [], message, code)],
        )


class BodyValidationError(ApiError):
    """Pydantic rejected a body assembled by the service (e.g. a PATCH applied to a resource)."""

    problem = "validation-error"

    def __init__(self, exc: ValidationError) -> None:
        self._init(exc.errors(include_url=False, include_input=False))

    def _init(self, raw: Iterable[Mapping[str, Any]]) -> None:
        errors = field_errors(raw, "body")
        ApiError.__init__(self, _summary(errors), errors=errors)

    @classmethod
    def from_errors(cls, raw: Iterable[Mapping[str, Any]]) -> BodyValidationError:
        """From pydantic-style error dicts (``loc``, ``msg``, ``type``) made by hand."""
        self = cls.__new__(cls)
        self._init(raw)
        return self


def _pointer(parts: Iterable[Any]) -> str:
    escaped = [str(p).replace("~", "~0").replace("/", "~1") for p in parts]
    return "#/" + "/".join(escaped) if escaped else "#"


def _field_error(location: str, parts: Sequence[Any], message: str, code: str) -> dict[str, Any]:
    return {
        "location": location,
        "field": ".".join(str(p) for p in parts),
        "pointer": _pointer(parts) if location == "body" else None,
        "message": message,
        "code": code,
    }


def field_errors(
    errors: Iterable[Mapping[str, Any]], default_location: str
) -> list[dict[str, Any]]:
    out = []
    for err in errors:
        loc = list(err.get("loc", ()))
        location = default_location
        if loc and loc[0] in ("body", "query", "path", "header", "cookie"):
            location = str(loc.pop(0))
        message = str(err.get("msg", "invalid value"))
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        out.append(_field_error(location, loc, message, str(err.get("type", "invalid"))))
    return out


def _summary(errors: Sequence[Mapping[str, Any]]) -> str:
    if not errors:
        return "invalid request"
    first = errors[0]
    where = first["field"] or first["location"]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['message']}{more}"


def problem_response(
    slug: str,
    detail: str,
    *,
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    status: int | None = None,
    **extensions: Any,
) -> JSONResponse:
    ptype = PROBLEM_TYPES[slug]
    body: dict[str, Any] = {
        "type": ptype.uri,
        "title": ptype.title,
        "status": status or ptype.status,
        "detail": detail,
    }
    if instance is not None:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = list(errors)
    body.update(extensions)
    return JSONResponse(
        body,
        status_code=status or ptype.status,
        headers=dict(headers or {}),
        media_type=PROBLEM_MEDIA_TYPE,
    )


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def api_error_response(exc: ApiError, instance: str) -> JSONResponse:
    return problem_response(
        exc.problem,
        exc.detail,
        instance=instance,
        headers=exc.headers,
        errors=exc.errors,
        **exc.extensions,
    )


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return api_error_response(exc, request.url.path)


async def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    raw = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in raw):
        err = next(e for e in raw if e.get("type") == "json_invalid")
        reason = (err.get("ctx") or {}).get("error", "invalid JSON")
        position = err["loc"][1] if len(err.get("loc", ())) > 1 else None
        detail = f"{reason} at character {position}" if position is not None else str(reason)
        return problem_response("malformed-json", detail, instance=request.url.path)
    has_body_error = any(tuple(e.get("loc", ()))[:1] == ("body",) for e in raw)
    if (
        has_body_error
        and request.method in ("POST", "PUT", "PATCH")
        and request.headers.get("content-length", "0") != "0"
        and not _is_json(request.headers.get("content-type"))
    ):
        return problem_response(
            "unsupported-media-type",
            f"expected application/json, got {request.headers.get('content-type') or 'nothing'}",
            instance=request.url.path,
        )
    errors = field_errors(raw, "body")
    return problem_response(
        "validation-error", _summary(errors), instance=request.url.path, errors=errors
    )


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    slug = _STATUS_SLUGS.get(
        exc.status_code, "bad-request" if exc.status_code < 500 else "internal-error"
    )
    detail = exc.detail if isinstance(exc.detail, str) else PROBLEM_TYPES[slug].title
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route {request.url.path}"
    return problem_response(
        slug, detail, instance=request.url.path, headers=exc.headers, status=exc.status_code
    )


RETRY_AFTER_S = 1


async def _backend_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The database or Redis did not answer (down, refusing, pool exhausted): 503, retry."""
    log.warning("backing service unavailable on %s %s: %s", request.method, request.url.path, exc)
    return problem_response(
        "service-unavailable",
        "a backing service is unavailable; retry shortly",
        instance=request.url.path,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


BACKEND_UNAVAILABLE: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError,  # connection refused or lost, server shutting down
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,  # no pooled connection within pool_timeout
    redis.ConnectionError,
    redis.TimeoutError,
)


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response("internal-error", "internal error", instance=request.url.path)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    for exc_type in BACKEND_UNAVAILABLE:
        app.add_exception_handler(exc_type, _backend_unavailable)
    app.add_exception_handler(Exception, _unhandled)
