"""The OpenAPI 3.1 document: error responses as problem+json, and an example on every body.

Routes declare their error statuses with :func:`problems`; :func:`build_openapi` then moves
those to ``application/problem+json`` and copies each schema's first example onto the media
type, so every operation in /docs shows a request and a response example.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from schemas.api import Problem
from service.errors import PROBLEM_TYPES, ProblemType

_STATUS_TYPE = {
    400: "malformed-json",
    401: "unauthenticated",
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


def operation_id(route: APIRoute) -> str:
    """The operationId of a route: its function's name (``get_project``, ``list_sites``).

    FastAPI's default appends the path and method (``get_project_v1_projects__project_id__get``),
    which generated clients turn into unusable function names. Route function names are unique
    across the app (a test checks it), so they are stable, clean identifiers as they are.
    """
    return route.name


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
    """``responses=`` entries for these error statuses (with 401 and 429 when ``auth``)."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted({*statuses, *((401, 429) if auth else ())}):
        ptype = PROBLEM_TYPES[_STATUS_TYPE[status]]
        out[status] = {
            "model": Problem,
            "description": ptype.description,
            "content": {"application/json": {"example": _example(ptype)}},
        }
    return out


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


_READABLE_NAME = re.compile(r"^[A-Z][A-Za-z0-9]*$")


def _readable_component_names(doc: dict[str, Any]) -> None:
    """Name each component schema by its title where pydantic's key is noisy.

    Pydantic keys a generic model by its type arguments (``Page_SitePublic_``, or the repr of
    an ``Annotated`` union); the title is the model's own name (``SitePublicPage``, from
    ``Page.model_parametrized_name``), which is what a generated client should call it.
    """
    schemas = doc.get("components", {}).get("schemas", {})
    renames: dict[str, str] = {}
    for key, schema in schemas.items():
        title = schema.get("title", "")
        if title != key and _READABLE_NAME.match(title) and title not in schemas:
            if title not in renames.values():
                renames[key] = title
    if not renames:
        return
    doc["components"]["schemas"] = dict(sorted((renames.get(k, k), v) for k, v in schemas.items()))
    prefix = "#/components/schemas/"
    old_refs = {prefix + old: prefix + new for old, new in renames.items()}

    def rewrite(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref in old_refs:
                node["$ref"] = old_refs[ref]
            for value in node.values():
                rewrite(value)
        elif isinstance(node, list):
            for value in node:
                rewrite(value)

    rewrite(doc)


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
    _readable_component_names(doc)
    components = doc.get("components", {}).get("schemas", {})
    for path_item in doc.get("paths", {}).values():
        for operation in path_item.values():
            body = operation.get("requestBody")
            if body:
                _decorate(body.get("content", {}), components)
            for code, response in operation.get("responses", {}).items():
                content = response.get("content")
                if not content:
                    continue
                if code[:1] in ("4", "5") and "application/json" in content:
                    response["content"] = {"application/problem+json": content["application/json"]}
                _decorate(response["content"], components)
    app.openapi_schema = doc
    return doc
