"""Capacity listings: per site x process x month, updated often, under optimistic concurrency."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    ColumnElement,
    Float,
    Select,
    any_,
    bindparam,
    func,
    update,
)
from sqlalchemy import select as core_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from schemas.api import ListingCreate, ListingPublic, ListingUpdate, ListingValues
from schemas.market import ProcessKind
from service.auth import Principal
from service.db import bump_market_version, market_bump_cte, market_bump_params
from service.errors import CapacityHeldError, ConflictError, InvalidFieldError, NotFoundError
from service.ids import new_id
from service.models import Listing, Site, utcnow
from service.pagination import PageParams, paginate
from service.repositories.common import (
    check_version,
    merge_patch,
    versioned_delete,
    versioned_update,
    where_visible,
)
from service.repositories.sites import visible_sites


@dataclass(frozen=True)
class ListingFilters:
    site_id: str | None = None
    process: ProcessKind | None = None
    month_from: str | None = None
    month_to: str | None = None


def to_public(listing: Listing, cdmo_id: str) -> ListingPublic:
    data = {
        name: getattr(listing, name)
        for name in ListingPublic.model_fields
        if name not in ("cdmo_id", "free_hours")
    }
    return ListingPublic.model_validate(
        {
            **data,
            "cdmo_id": cdmo_id,
            "free_hours": max(0.0, listing.capacity_hours - listing.reserved_hours),
        }
    )


_LOCKED = "cdmo_locked_listings"
_EPS = 1e-9  # float tolerance of _check_holds, the same in patch_at_once


def get_listing(
    *, session: Session, principal: Principal, listing_id: str, lock: bool = False
) -> tuple[Listing, str]:
    """The listing and its CDMO's id, or 404 when it does not exist or is not the caller's.
    ``lock`` (a write): read under the row lock the write needs, in the same round trip."""
    stmt = (
        select(Listing, Site.cdmo_id)
        .join(Site, Site.id == Listing.site_id)  # type: ignore[arg-type]
        .where(Listing.id == listing_id)
    )
    if lock:
        stmt = stmt.with_for_update(of=Listing)  # type: ignore[arg-type]
    row = session.exec(stmt).first()
    if row is None or not (principal.is_operator or row[1] == principal.org_id):
        raise NotFoundError(f"listing {listing_id} not found")
    if lock:
        session.info.setdefault(_LOCKED, set()).add(listing_id)
    return row[0], row[1]


def list_listings(
    *, session: Session, principal: Principal, filters: ListingFilters, page: PageParams
) -> tuple[Sequence[tuple[Listing, str]], str | None]:
    stmt = select(Listing, Site.cdmo_id).join(Site, Site.id == Listing.site_id)  # type: ignore[arg-type]
    stmt = where_visible(stmt, visible_sites(principal))  # a listing is visible with its site
    if filters.site_id is not None:
        stmt = stmt.where(Listing.site_id == filters.site_id)
    if filters.process is not None:
        stmt = stmt.where(Listing.process == filters.process.value)
    if filters.month_from is not None:
        stmt = stmt.where(Listing.month >= filters.month_from)
    if filters.month_to is not None:
        stmt = stmt.where(Listing.month <= filters.month_to)
    rows, cursor = paginate(session, stmt, Listing.id, page)
    return [(r[0], r[1]) for r in rows], cursor


def create_listing(
    *, session: Session, site: Site, listing_in: ListingCreate, listing_id: str | None = None
) -> Listing:
    if listing_in.process.value not in site.processes:
        raise InvalidFieldError(
            "process",
            f"site {site.id} does not run {listing_in.process.value}; "
            "add the process to the site first",
            code="process_not_at_site",
        )
    duplicate = session.exec(
        select(Listing.id).where(
            Listing.site_id == site.id,
            Listing.process == listing_in.process.value,
            Listing.month == listing_in.month,
        )
    ).first()
    if duplicate is not None:
        raise ConflictError(
            f"site {site.id} already lists {listing_in.process.value} for {listing_in.month}: "
            f"update listing {duplicate} instead",
            existing_id=duplicate,
        )
    listing = Listing(
        id=listing_id or new_id("lst"), site_id=site.id, **listing_in.model_dump(mode="json")
    )
    session.add(listing)
    try:
        bump_market_version(session, supply=True)  # flushes the insert first
    except IntegrityError as exc:  # the same listing created concurrently
        raise ConflictError(
            f"site {site.id} already lists {listing_in.process.value} for {listing_in.month}"
        ) from exc
    return listing


def _write(session: Session, listing: Listing, values: dict[str, Any]) -> Listing:
    versioned_update(session, Listing, listing, values, f"listing {listing.id}")
    bump_market_version(session, supply=True)
    return listing


def _lock(session: Session, listing: Listing) -> None:
    """Re-read the row under a lock: deals hold hours in it concurrently (service.flows.deals);
    nothing to do when it was read under the lock already (``get_listing(lock=True)``)."""
    if listing.id in session.info.get(_LOCKED, ()):
        return
    session.refresh(listing, with_for_update=True)


def _check_holds(listing: Listing, capacity: float, reserved: float) -> None:
    """Capacity never below what is reserved, reserved never below what deals hold: 409."""
    held = listing.held_hours
    if reserved < held - _EPS:
        raise CapacityHeldError(
            f"listing {listing.id}: reserved_hours cannot go below the {held:g} h held by "
            "accepted deals",
            held_hours=held,
            reserved_hours=listing.reserved_hours,
        )
    if capacity < max(reserved, held) - _EPS:
        raise CapacityHeldError(
            f"listing {listing.id}: capacity_hours cannot go below the {max(reserved, held):g} "
            f"h reserved ({held:g} h of them held by accepted deals)",
            held_hours=held,
            reserved_hours=max(reserved, held),
        )


def replace_listing(
    *, session: Session, listing: Listing, values: ListingValues, expected: frozenset[int]
) -> Listing:
    _lock(session, listing)
    check_version(listing.version, expected, f"listing {listing.id}")
    _check_holds(listing, values.capacity_hours, values.reserved_hours)
    return _write(session, listing, values.model_dump(mode="json"))


def patch_listing(
    *, session: Session, listing: Listing, patch: ListingUpdate, expected: frozenset[int]
) -> Listing:
    _lock(session, listing)
    check_version(listing.version, expected, f"listing {listing.id}")
    given = patch.model_dump(exclude_unset=True)
    capacity = given.get("capacity_hours")
    reserved = given.get("reserved_hours")
    _check_holds(
        listing,
        listing.capacity_hours if capacity is None else capacity,
        listing.reserved_hours if reserved is None else reserved,
    )
    merged = merge_patch(ListingValues, listing, patch.model_dump(mode="json", exclude_unset=True))
    return _write(session, listing, merged.model_dump(mode="json"))


def patch_at_once(
    *,
    principal: Principal,
    listing_id: str,
    patch: ListingUpdate,
    expected: frozenset[int],
) -> tuple[Callable[[ColumnElement[bool]], Select[Any]], dict[str, Any]] | None:
    """:func:`patch_listing` as one statement (service.transactions.Transaction.commit_at_once):
    the listing's ``UPDATE ... RETURNING`` and the market version bump, both only where
    everything :func:`get_listing`, :func:`patch_listing` and the merged ``ListingValues``
    check holds (the caller's listing, the version in If-Match, reserved within capacity,
    capacity and reserved above what deals hold) and ``gate``; with its parameters. A row:
    written. No row: a check failed, and :func:`patch_listing`'s path says which. None
    here: the patch cannot be written this way (an explicit null: the usual path answers
    422)."""
    given = patch.model_dump(exclude_unset=True)
    if not expected or any(v is None for v in given.values()):
        return None
    params = {
        **{f"new_{name}": given.get(name) for name in _VALUES},  # None: unchanged
        "listing_id": listing_id,
        "versions": sorted(expected),
        "org_id": principal.org_id,
        "now": utcnow(),
        **market_bump_params(),
    }
    return partial(_patch_statement, principal.is_operator), params


_VALUES = ("capacity_hours", "reserved_hours", "price_per_hour")


@cache
def _patch_statement(operator: bool, gate: ColumnElement[bool]) -> Select[Any]:
    """Built once per shape (and gate, a long-lived clause); values are parameters."""
    new = {
        name: func.coalesce(bindparam(f"new_{name}", type_=Float), col(getattr(Listing, name)))
        for name in _VALUES
    }
    capacity, reserved = new["capacity_hours"], new["reserved_hours"]
    held = col(Listing.held_hours)
    conditions = [
        col(Listing.id) == bindparam("listing_id"),
        col(Listing.site_id) == col(Site.id),
        col(Listing.version) == any_(bindparam("versions", type_=ARRAY(BigInteger))),
        reserved <= capacity,  # ListingValues
        reserved >= held - _EPS,  # _check_holds
        capacity >= func.greatest(reserved, held) - _EPS,
        gate,
    ]
    if not operator:
        conditions.append(col(Site.cdmo_id) == bindparam("org_id"))
    written = (
        update(Listing)
        .where(*conditions)
        .values(
            **new,
            version=col(Listing.version) + 1,
            updated_at=bindparam("now", type_=Listing.__table__.c.updated_at.type),  # type: ignore[attr-defined]
        )
        .returning(*Listing.__table__.columns, col(Site.cdmo_id))  # type: ignore[attr-defined]
        .cte("written")
    )
    bumped = market_bump_cte(core_select(written.c.id).exists(), supply=True)
    return core_select(written).add_cte(bumped)


def from_row(row: Any) -> tuple[Listing, str]:
    """The listing and its CDMO's id from a row of :func:`patch_at_once`."""
    columns = Listing.__table__.columns  # type: ignore[attr-defined]
    listing = Listing(**{c.key: getattr(row, c.key) for c in columns})
    return listing, row.cdmo_id


def delete_listing(*, session: Session, listing: Listing, expected: frozenset[int] | None) -> None:
    _lock(session, listing)
    check_version(listing.version, expected, f"listing {listing.id}")
    if listing.held_hours > 0:
        raise CapacityHeldError(
            f"listing {listing.id} holds {listing.held_hours:g} h for accepted deals",
            held_hours=listing.held_hours,
        )
    versioned_delete(session, Listing, listing, f"listing {listing.id}")
    bump_market_version(session, supply=True)
