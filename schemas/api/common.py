"""Building blocks shared by every resource of the HTTP API: base model, enums, pages, problems."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated, Any, Generic, TypeVar, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


class ApiModel(BaseModel):
    """Request and response bodies: unknown fields are rejected, no NaN or infinities."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, allow_inf_nan=False)


def as_utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


UtcDateTime = Annotated[dt.datetime, AfterValidator(as_utc)]


def _unique(values: list[Any]) -> list[Any]:
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{value!s} is listed twice")
        seen.add(value)
    return values


T = TypeVar("T")

UniqueList = Annotated[list[T], AfterValidator(_unique)]
"""A list whose items must be distinct (a set, kept in the caller's order)."""


class OrgKind(StrEnum):
    MAKER = "maker"
    CDMO = "cdmo"
    OPERATOR = "operator"


class ProjectStatus(StrEnum):
    """Lifecycle of a project. Only ``open`` and ``proposed`` projects enter a market snapshot."""

    DRAFT = "draft"
    OPEN = "open"
    PROPOSED = "proposed"
    MATCHED = "matched"
    CLOSED = "closed"


class ProposalStatus(StrEnum):
    PROPOSED = "proposed"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    WITHDRAWN = "withdrawn"
    SUPERSEDED = "superseded"
    CONFIRMED = "confirmed"
    EXPIRED = "expired"


# A proposal still in play (a confirmed one is a deal: it stays, holding its hours).
ACTIVE_PROPOSAL_STATUSES = frozenset(
    {ProposalStatus.PROPOSED, ProposalStatus.ACCEPTED, ProposalStatus.CONFIRMED}
)
# Proposals whose hours are held in the listings' reserved_hours.
HOLDING_PROPOSAL_STATUSES = frozenset({ProposalStatus.ACCEPTED, ProposalStatus.CONFIRMED})


def _first_model(tp: Any) -> type[BaseModel] | None:
    """The first pydantic model inside ``tp`` (itself, or a member of a union/Annotated)."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    for arg in get_args(tp):
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def _page_examples(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    """Example of a page, built from the example of its item model."""
    args = cls.__pydantic_generic_metadata__.get("args", ())
    item_examples: list[Any] = []
    model = _first_model(args[0]) if args else None
    if model is not None:
        extra = model.model_config.get("json_schema_extra")
        if isinstance(extra, dict):
            examples = extra.get("examples", [])
            item_examples = list(examples)[:1] if isinstance(examples, list) else []
    schema["examples"] = [{"items": item_examples, "next_cursor": "eyJhZnRlciI6InByal8wMSJ9"}]


class Page(BaseModel, Generic[T]):
    """One page of a list. Pass ``next_cursor`` back as ``cursor`` to get the next page."""

    model_config = ConfigDict(json_schema_extra=_page_examples)

    items: list[T]
    next_cursor: str | None = Field(
        description="Opaque cursor of the next page; null on the last page."
    )

    @classmethod
    def model_parametrized_name(cls, params: tuple[Any, ...]) -> str:
        """``SitePublicPage``, ``ProjectPublicOrProjectRedactedPage``: the component name a
        generated client shows, instead of pydantic's repr of the type arguments."""
        return "".join(_type_name(param) for param in params) + "Page"


def _type_name(tp: Any) -> str:
    """A readable name of a type argument: a class's name, a union's members joined by Or."""
    if isinstance(tp, type):
        return tp.__name__
    members = [arg for arg in get_args(tp) if arg is not type(None)]
    if not members:
        return "Item"
    if get_origin(tp) is Annotated:
        return _type_name(members[0])
    return "Or".join(_type_name(arg) for arg in members)


class FieldError(BaseModel):
    location: str = Field(description="Where the bad value is: body, query, path or header.")
    field: str = Field(description="Dotted path of the value, e.g. loads.0.monthly_hours.2.")
    pointer: str | None = Field(
        default=None, description="JSON Pointer (RFC 6901) into the request body."
    )
    message: str
    code: str = Field(description="Stable machine-readable code of the error.")


class Problem(BaseModel):
    """RFC 9457 problem details; every error response of the API has this shape."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "/problems/not-found",
                    "title": "Not found",
                    "status": 404,
                    "detail": "project prj_01JD8Q0000000000000000000 not found",
                    "instance": "/v1/projects/prj_01JD8Q0000000000000000000",
                }
            ]
        },
    )

    type: str = Field(description="Stable URI reference identifying the problem type.")
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldError] | None = Field(
        default=None, description="One entry per invalid value (validation problems only)."
    )
