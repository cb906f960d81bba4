"""Helpers shared by the repositories: visibility, PATCH merging, versioned updates and
JSON-array filters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import (
    ColumnElement,
    Select,
    delete,
    exists,
    func,
    literal,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session

from service.errors import BodyValidationError, PreconditionFailedError
from service.models import utcnow

SelectT = TypeVar("SelectT", bound=Select[*tuple[Any, ...]])
ModelT = TypeVar("ModelT", bound=BaseModel)


def etag(version: int) -> str:
    return f'"{version}"'


def where_visible(stmt: SelectT, condition: Any) -> SelectT:
    """``stmt`` restricted to what a principal may see; ``condition`` None means everything."""
    return stmt if condition is None else stmt.where(condition)


def merge_patch(schema: type[ModelT], obj: Any, changes: Mapping[str, Any]) -> ModelT:
    """``obj``'s ``schema`` fields with ``changes`` applied, validated as a whole (422 if not)."""
    current = {name: getattr(obj, name) for name in schema.model_fields}
    try:
        return schema.model_validate({**current, **changes})
    except ValidationError as exc:
        raise BodyValidationError(exc) from exc


def check_version(current: int, expected: frozenset[int] | None, what: str) -> None:
    if expected is not None and current not in expected:
        raise PreconditionFailedError(
            f"{what} has changed (now version {current}); re-read it and retry",
            headers={"ETag": etag(current)},
            current_version=current,
        )


def versioned_update(
    session: Session, model: Any, obj: Any, values: dict[str, Any], what: str
) -> None:
    """``UPDATE ... SET ..., version = version + 1 WHERE id = :id AND version = :read``.

    The row's version was checked against If-Match when it was read; this closes the window
    between that read and the write: a writer that lost the race updates no row and gets 412.
    """
    read_version = obj.version
    table = model.__table__
    row = (
        session.execute(
            update(model)
            .where(model.id == obj.id, model.version == read_version)
            .values(**values, version=model.version + 1, updated_at=utcnow())
            .returning(*table.columns)  # the new row in the same round trip (no refresh)
            .execution_options(synchronize_session=False)
        )
        .mappings()
        .first()
    )
    if row is None:
        raise PreconditionFailedError(
            f"{what} was changed by another request; re-read it and retry"
        )
    for column in table.columns:
        set_committed_value(obj, column.key, row[column])


def json_array_contains(session: Session, column: Any, value: str) -> ColumnElement[bool]:
    """``value`` is an element of the JSON array in ``column`` (PostgreSQL or SQLite)."""
    return json_array_contains_on(session.get_bind().dialect.name, column, value)


def json_array_contains_on(dialect: str, column: Any, value: str) -> ColumnElement[bool]:
    if dialect == "postgresql":
        return column.op("@>", is_comparison=True)(type_coerce([value], JSONB))
    each = func.json_each(column).table_valued("value")
    return exists(select(literal(1)).select_from(each).where(each.c.value == value))


def versioned_delete(session: Session, model: Any, obj: Any, what: str) -> None:
    """Delete the row only if it is still at the version that was read (and checked)."""
    result = session.execute(
        delete(model)
        .where(model.id == obj.id, model.version == obj.version)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise PreconditionFailedError(f"{what} was changed by another request; re-read it")
    session.expunge(obj)
