"""The OpenAPI 3.1 document: error responses as problem+json, and an example on every body.

Routes declare their error statuses with :func:`problems`; :func:`build_openapi` then moves
those to ``application/problem+json`` and copies each schema's first example onto the media
type, so every operation in /docs shows a request and a response example.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from schemas.api import Problem
from service.errors import PROBLEM_TYPES, ProblemType

_STATUS_TYPE = {
    400: "malformed-json",
    401: "unauthenticated",
    408: "request-timeout",
    403: "forbidden",
    404: "not-found",
    409: "conflict",
    412: "precondition-failed",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation-error",
    428: "precondition-required",
    429: "rate-limited",
    503: "service-unavailable",
}


def _example(ptype: ProblemType) -> dict[str, Any]:
    example: dict[str, Any] = {
        "type": ptype.uri,
        "title": ptype.title,
        "status": ptype.status,
        "detail": ptype.description,
        "instance": "/v1/projects/prj_01JD8QD4E5F6G7H8J9K0M1N2P3",
    }
    if ptype.slug == "validation-error":
        example["detail"] = "window_end: window_end is before window_start"
        example["errors"] = [
            {
                "location": "body",
                "field": "window_end",
                "pointer": "#/window_end",
                "message": "window_end is before window_start",
                "code": "value_error",
            }
        ]
    return example


def problems(*statuses: int, auth: bool = True) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for these error statuses (with 401, 429 and 503 when ``auth``:
    any authenticated call may be refused, throttled, or shed under overload)."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted({*statuses, *((401, 429, 503) if auth else ())}):
        ptype = PROBLEM_TYPES[_STATUS_TYPE[status]]
        out[status] = {
            "model": Problem,
            "description": ptype.description,
            "content": {"application/json": {"example": _example(ptype)}},
        }
    return out


def _problem_response(status: int) -> dict[str, Any]:
    ptype = PROBLEM_TYPES[_STATUS_TYPE[status]]
    return {
        "description": ptype.description,
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/Problem"},
                "example": _example(ptype),
            }
        },
    }


def _first_example(schema: dict[str, Any], components: dict[str, Any]) -> Any:
    if "$ref" in schema:
        target = components.get(schema["$ref"].rsplit("/", 1)[-1], {})
        return _first_example(target, components)
    if schema.get("examples"):
        examples = schema["examples"]
        return examples[0] if isinstance(examples, list) else next(iter(examples.values()))
    for key in ("oneOf", "anyOf"):
        for option in schema.get(key, []):
            found = _first_example(option, components)
            if found is not None:
                return found
    return None


def _decorate(content: dict[str, Any], components: dict[str, Any]) -> None:
    for media in content.values():
        if "example" in media or "examples" in media or "schema" not in media:
            continue
        example = _first_example(media["schema"], components)
        if example is not None:
            media["example"] = example


def build_openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    components = doc.get("components", {}).get("schemas", {})
    for path_item in doc.get("paths", {}).values():
        for operation in path_item.values():
            body = operation.get("requestBody")
            if body:
                _decorate(body.get("content", {}), components)
                # every body may be malformed JSON (400) or arrive too slowly (408)
                for status in (400, 408):
                    operation["responses"].setdefault(str(status), _problem_response(status))
            for code, response in operation.get("responses", {}).items():
                content = response.get("content")
                if not content:
                    continue
                if code[:1] in ("4", "5") and "application/json" in content:
                    response["content"] = {"application/problem+json": content["application/json"]}
                _decorate(response["content"], components)
    app.openapi_schema = doc
    return doc
