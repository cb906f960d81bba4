"""Answers built from rows of our own database without validating them again.

Every value in a row of ours was validated by the model it was written from (a project by
``ProjectCreate``/``ProjectUpdate``, dumped in JSON mode). Validating it again on every read,
to build the answer's pydantic model and then serialise that model, was most of a list
read's CPU (README "The lean path"). A :class:`RowView` takes the answer's shape from the
answer's own model instead - its fields in their order, each read from the row's column of
the same name, a field with no column its model default - and gives a dict of JSON-ready
values that :func:`answer_json` serialises to the bytes the model would give
(``tests/service/test_trusted_views.py`` compares them, byte for byte, on rows of both
backends). So the view models stay the one definition of the answer; only the values are
trusted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from operator import attrgetter
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_json

Convert = Callable[[Any], Any]


class RowView:
    """The dict a ``model`` built from a row would serialise to, built without validation.

    ``columns``: the names a row has (read by attribute: a psycopg named tuple or a
    SQLAlchemy ``Row``); a field of ``model`` not among them takes its default (a
    discriminator such as ``view``). ``convert``: what a column's value needs to serialise
    as its field's would, where the model has that field (a datetime to UTC, nested dicts
    in their model's field order); any other value is serialised as it is (a ``str`` as
    its enum member would be).
    """

    def __init__(
        self,
        model: type[BaseModel],
        columns: Iterable[str],
        convert: Mapping[str, Convert] | None = None,
    ) -> None:
        available = set(columns)
        fields = model.model_fields
        self._read = tuple(name for name in fields if name in available)
        # every field in the model's order: update() keeps the order of the keys it sets
        self._template: dict[str, Any] = {}
        for name, field in fields.items():
            if name in available:
                self._template[name] = None
            elif field.is_required():
                raise TypeError(f"{model.__name__}.{name}: no column and no default")
            else:
                self._template[name] = field.get_default(call_default_factory=True)
        self._get = attrgetter(*self._read)
        convert = convert or {}
        if not available.issuperset(convert):
            raise TypeError(f"no column to convert: {sorted(set(convert) - available)}")
        self._convert = tuple((k, f) for k, f in convert.items() if k in self._read)

    def __call__(self, row: Any) -> dict[str, Any]:
        values = self._template.copy()
        values.update(zip(self._read, self._get(row), strict=True))
        for name, convert in self._convert:
            values[name] = convert(values[name])
        return values


def in_field_order(model: type[BaseModel]) -> Convert:
    """A list of dicts stored from ``model`` (a JSON column), each in the model's field
    order: JSONB keeps an object's keys in an order of its own (shortest first)."""
    names = tuple(model.model_fields)

    def convert(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{name: item[name] for name in names} for item in items]

    return convert


def answer_json(data: Any) -> str:
    """The JSON text of an answer built with :class:`RowView` (as ``model_dump_json``)."""
    return to_json(data).decode()
