"""Bulk load of a whole market (benchmarks, tests, the demo): organisations, sites, listings
and projects from a :class:`schemas.market.MarketSnapshot`, in executemany batches (never
row by row through the ORM). Does not commit."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import JSON, insert
from sqlmodel import Session

from schemas.api import OrgKind, ProjectStatus
from schemas.market import MarketSnapshot
from service.db import bump_market_version
from service.ids import new_id
from service.models import Listing, Organisation, Project, Site, utcnow

BATCH = 5000


def _batches(rows: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def copy_rows(session: Session, model: Any, rows: Sequence[dict[str, Any]]) -> int:
    """Insert ``rows`` (dicts with the same keys) into ``model``'s table inside the session's
    transaction: PostgreSQL ``COPY ... FROM STDIN`` (no statement per row, no ORM object),
    executemany batches elsewhere. Columns missing from the rows take their column defaults
    (evaluated once for the whole batch: e.g. one ``created_at``)."""
    if not rows:
        return 0
    if session.get_bind().dialect.name != "postgresql":
        return _insert(session, model, rows)
    table = model.__table__
    keys = list(rows[0])
    extra: dict[str, Any] = {}
    for column in table.columns:
        if column.name in keys or column.default is None:
            continue
        default = column.default
        extra[column.name] = default.arg if default.is_scalar else default.arg(None)
    from psycopg.types.json import Jsonb

    json_columns = {c.name for c in table.columns if isinstance(c.type, JSON)}
    names = ", ".join(f'"{name}"' for name in [*keys, *extra])
    tail = [Jsonb(v) if k in json_columns and v is not None else v for k, v in extra.items()]
    raw = session.connection().connection.driver_connection
    assert raw is not None
    with raw.cursor() as cursor, cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
        for row in rows:
            values = [row[k] for k in keys]
            for i, k in enumerate(keys):
                if k in json_columns and values[i] is not None:
                    values[i] = Jsonb(values[i])
            copy.write_row([*values, *tail])
    return len(rows)


def _insert(session: Session, model: Any, rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    for batch in _batches(rows):
        session.execute(insert(model), batch)
        n += len(batch)
    return n


def load_market(
    *,
    session: Session,
    snapshot: MarketSnapshot,
    org_names: dict[str, str] | None = None,
    existing_orgs: Sequence[str] = (),
) -> dict[str, int]:
    """Insert everything in ``snapshot`` (projects as ``open``); organisations named by the
    sites' ``cdmo_id`` and the projects' ``maker_id`` are created unless in ``existing_orgs``.
    Returns the row counts."""
    now = utcnow()
    names = org_names or {}
    skip = set(existing_orgs)
    cdmos = sorted({s.cdmo_id for s in snapshot.sites} - skip)
    makers = sorted({p.maker_id for p in snapshot.projects} - skip - set(cdmos))
    counts = {
        "organisations": _insert(
            session,
            Organisation,
            (
                {"id": oid, "name": names.get(oid, oid), "kind": kind.value, "created_at": now}
                for kind, ids in ((OrgKind.CDMO, cdmos), (OrgKind.MAKER, makers))
                for oid in ids
            ),
        )
    }
    site_fields = ("id", "cdmo_id", "name", "country", "region", "overseas")
    counts["sites"] = _insert(
        session,
        Site,
        (
            {
                **{f: getattr(s, f) for f in site_fields},
                "name": s.name or s.id,
                **s.model_dump(
                    mode="json",
                    include={"certifications", "processes", "categories", "device_classes"},
                ),
                "quality": s.quality.model_dump(mode="json"),
                "version": 1,
                "created_at": now,
                "updated_at": now,
            }
            for s in snapshot.sites
        ),
    )
    counts["listings"] = _insert(
        session,
        Listing,
        (
            {
                "id": new_id("lst"),
                "site_id": lst.site_id,
                "process": lst.process.value,
                "month": lst.month,
                "capacity_hours": lst.capacity_hours,
                "reserved_hours": lst.reserved_hours,
                "price_per_hour": lst.price_per_hour,
                "version": 1,
                "created_at": now,
                "updated_at": now,
            }
            for lst in snapshot.listings
        ),
    )
    counts["projects"] = _insert(
        session,
        Project,
        (
            {
                **p.model_dump(mode="json"),
                "title": p.title or p.id,
                "status": ProjectStatus.OPEN.value,
                "version": 1,
                "created_at": now,
                "updated_at": now,
            }
            for p in snapshot.projects
        ),
    )
    bump_market_version(session, supply=True)
    return counts
