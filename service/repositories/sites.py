"""CDMO sites. A CDMO sees and edits only its own; operators see all; makers none."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import false, func
from sqlmodel import Session, select

from schemas.api import (
    ACTIVE_PROPOSAL_STATUSES,
    SiteBase,
    SiteCreate,
    SitePublic,
    SiteUpdate,
)
from schemas.market import DeviceCategory, ProcessKind, Region
from service.auth import Principal
from service.db import bump_market_version
from service.errors import InvalidStateError, NotFoundError
from service.ids import new_id
from service.models import Proposal, Site
from service.pagination import PageParams, paginate
from service.repositories.common import (
    check_version,
    json_array_contains,
    merge_patch,
    versioned_delete,
    versioned_update,
    where_visible,
)
from service.repositories.orgs import CDMO_OWNS_SITES, owning_org


@dataclass(frozen=True)
class SiteFilters:
    cdmo_id: str | None = None
    region: Region | None = None
    country: str | None = None
    process: ProcessKind | None = None
    category: DeviceCategory | None = None
    overseas: bool | None = None


def to_public(site: Site) -> SitePublic:
    return SitePublic.model_validate(site, from_attributes=True)


def visible_sites(principal: Principal) -> Any:
    """Which sites ``principal`` may see, as a condition on Site (None: all of them)."""
    if principal.is_operator:
        return None
    if principal.is_cdmo:
        return Site.cdmo_id == principal.org_id
    return false()


def get_site(*, session: Session, principal: Principal, site_id: str) -> Site:
    site = session.get(Site, site_id)
    if site is None or not (principal.is_operator or site.cdmo_id == principal.org_id):
        raise NotFoundError(f"site {site_id} not found")
    return site


def list_sites(
    *, session: Session, principal: Principal, filters: SiteFilters, page: PageParams
) -> tuple[Sequence[Site], str | None]:
    stmt = where_visible(select(Site), visible_sites(principal))
    if filters.cdmo_id is not None:
        stmt = stmt.where(Site.cdmo_id == filters.cdmo_id)
    if filters.region is not None:
        stmt = stmt.where(Site.region == filters.region.value)
    if filters.country is not None:
        stmt = stmt.where(Site.country == filters.country)
    if filters.overseas is not None:
        stmt = stmt.where(Site.overseas == filters.overseas)
    if filters.process is not None:
        stmt = stmt.where(json_array_contains(session, Site.processes, filters.process.value))
    if filters.category is not None:
        stmt = stmt.where(json_array_contains(session, Site.categories, filters.category.value))
    rows, cursor = paginate(session, stmt, Site.id, page)
    return [r[0] for r in rows], cursor


def create_site(
    *, session: Session, principal: Principal, site_in: SiteCreate, site_id: str | None = None
) -> Site:
    cdmo_id = owning_org(session, principal, site_in.cdmo_id, CDMO_OWNS_SITES)
    values = site_in.model_dump(mode="json", exclude={"cdmo_id"})
    site = Site(id=site_id or new_id("site"), cdmo_id=cdmo_id, **values)
    session.add(site)
    bump_market_version(session, supply=True)
    return site


def update_site(
    *, session: Session, site: Site, patch: SiteUpdate, expected: frozenset[int]
) -> Site:
    check_version(site.version, expected, f"site {site.id}")
    merged = merge_patch(SiteBase, site, patch.model_dump(mode="json", exclude_unset=True))
    values = merged.model_dump(mode="json")
    versioned_update(session, Site, site, values, f"site {site.id}")
    bump_market_version(session, supply=True)
    return site


def active_proposal_count(session: Session, *, site_id: str) -> int:
    stmt = (
        select(func.count())
        .select_from(Proposal)
        .where(
            Proposal.site_id == site_id,
            Proposal.status.in_([s.value for s in ACTIVE_PROPOSAL_STATUSES]),  # type: ignore[attr-defined]
        )
    )
    return int(session.exec(stmt).one())


def delete_site(*, session: Session, site: Site, expected: frozenset[int] | None) -> None:
    check_version(site.version, expected, f"site {site.id}")
    if active_proposal_count(session, site_id=site.id):
        raise InvalidStateError(
            f"site {site.id} has active proposals; have them withdrawn or declined first"
        )
    versioned_delete(session, Site, site, f"site {site.id}")
    bump_market_version(session, supply=True)
