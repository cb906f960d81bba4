"""Cursor pagination: keyset on the primary key (ids sort by creation time), opaque cursors."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from service.errors import InvalidFieldError

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


@dataclass(frozen=True)
class PageParams:
    limit: int = DEFAULT_LIMIT
    after: str | None = None


def encode_cursor(after: str) -> str:
    raw = json.dumps({"after": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        after = data["after"]
        if not isinstance(after, str) or not after or len(after) > 64:
            raise ValueError("bad cursor")
        return after
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidFieldError(
            "cursor", "not a cursor returned by this API", location="query", code="cursor_invalid"
        ) from exc


def paginate(
    session: Session,
    stmt: Any,
    id_column: Any,
    page: PageParams,
) -> tuple[Sequence[Any], str | None]:
    """Rows of ``stmt`` after the cursor, ordered by ``id_column``; and the next cursor.

    ``stmt`` may select one entity or a tuple; the first element carries the key. The key is
    any unique, string-sortable column of it (an id, or a zero-padded position).
    """
    rows = list(session.execute(page_statement(stmt, id_column, page)).all())
    return page_of(rows, id_column, page, first=True)


def page_statement(stmt: Any, id_column: Any, page: PageParams) -> Any:
    """``stmt`` after the cursor, ordered by ``id_column``, one row more than the page."""
    return keyset(stmt, id_column, page.after, page.limit + 1)


def keyset(stmt: Any, id_column: Any, after: Any, rows: Any) -> Any:
    """``stmt``'s first ``rows`` rows after ``after`` (None: from the start) by ``id_column``;
    the values, or bound parameters (a statement built once, service.db.RawStatement)."""
    if after is not None:
        stmt = stmt.where(id_column > after)
    return stmt.order_by(id_column).limit(rows)


def page_of(
    rows: list[Any], id_column: Any, page: PageParams, *, first: bool = False
) -> tuple[list[Any], str | None]:
    """The page of rows read with :func:`page_statement`, and the next cursor. ``first``:
    the key is on the row's first element (an entity), not on the row."""
    next_cursor = None
    if len(rows) > page.limit:
        rows = rows[: page.limit]
        last = rows[-1][0] if first else rows[-1]
        next_cursor = encode_cursor(getattr(last, id_column.key))
    return rows, next_cursor
