"""CDMO sites and, under them, their capacity listings."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from schemas.api import ListingCreate, ListingPublic, Page, SiteCreate, SitePublic, SiteUpdate
from schemas.market import DeviceCategory, ProcessKind, Region, YearMonth
from service import repositories as repo
from service.deps import (
    ID_PATTERN,
    CdmoOrOperator,
    IfMatch,
    IfMatchOptional,
    PageDep,
    SessionDep,
    SiteDep,
    cdmo_or_operator,
)
from service.idempotency import IdempotencyDep
from service.openapi import problems
from service.repositories.common import etag
from service.repositories.listings import ListingFilters
from service.repositories.sites import SiteFilters
from service.transactions import Tx

router = APIRouter(prefix="/v1/sites", tags=["sites"], dependencies=[Depends(cdmo_or_operator)])


@router.post(
    "",
    status_code=201,
    summary="Create a site (CDMOs for themselves; operators name cdmo_id)",
    response_model=SitePublic,
    responses=problems(403, 409, 413, 415, 422),
    dependencies=[IdempotencyDep],
)
def create_site(site_in: SiteCreate, tx: Tx, principal: CdmoOrOperator) -> Response:
    site = repo.sites.create_site(session=tx.session, principal=principal, site_in=site_in)
    return tx.respond(
        repo.sites.to_public(site),
        status_code=201,
        headers={"Location": f"/v1/sites/{site.id}", "ETag": etag(site.version)},
    )


@router.get(
    "",
    summary="List sites (CDMOs: their own; operators: all)",
    responses=problems(403, 422),
)
def list_sites(
    session: SessionDep,
    principal: CdmoOrOperator,
    page: PageDep,
    cdmo_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    region: Region | None = None,
    country: Annotated[str | None, Query(pattern=r"^[A-Z]{2}$")] = None,
    process: ProcessKind | None = None,
    category: DeviceCategory | None = None,
    overseas: bool | None = None,
) -> Page[SitePublic]:
    filters = SiteFilters(
        cdmo_id=cdmo_id,
        region=region,
        country=country,
        process=process,
        category=category,
        overseas=overseas,
    )
    rows, cursor = repo.sites.list_sites(
        session=session, principal=principal, filters=filters, page=page
    )
    return Page(items=[repo.sites.to_public(s) for s in rows], next_cursor=cursor)


@router.get("/{site_id}", summary="One site", responses=problems(403, 404, 422))
async def get_site(site: SiteDep, response: Response) -> SitePublic:
    response.headers["ETag"] = etag(site.version)
    return repo.sites.to_public(site)


@router.patch(
    "/{site_id}",
    summary="Change a site (If-Match required)",
    response_model=SitePublic,
    responses=problems(403, 404, 409, 412, 413, 415, 422, 428),
)
def update_site(patch: SiteUpdate, site: SiteDep, expected: IfMatch, tx: Tx) -> Response:
    site = repo.sites.update_site(session=tx.session, site=site, patch=patch, expected=expected)
    return tx.respond(repo.sites.to_public(site), headers={"ETag": etag(site.version)})


@router.delete(
    "/{site_id}",
    status_code=204,
    summary="Delete a site and its listings (not while it has active proposals)",
    responses=problems(403, 404, 409, 412, 422),
)
def delete_site(site: SiteDep, expected: IfMatchOptional, tx: Tx) -> Response:
    repo.sites.delete_site(session=tx.session, site=site, expected=expected)
    return tx.respond(None, status_code=204)


@router.get(
    "/{site_id}/listings",
    summary="The site's capacity listings",
    responses=problems(403, 404, 422),
    tags=["listings"],
)
def list_site_listings(
    site: SiteDep,
    principal: CdmoOrOperator,
    session: SessionDep,
    page: PageDep,
    process: ProcessKind | None = None,
    month_from: YearMonth | None = None,
    month_to: YearMonth | None = None,
) -> Page[ListingPublic]:
    filters = ListingFilters(
        site_id=site.id, process=process, month_from=month_from, month_to=month_to
    )
    rows, cursor = repo.listings.list_listings(
        session=session, principal=principal, filters=filters, page=page
    )
    return Page(
        items=[repo.listings.to_public(lst, cdmo) for lst, cdmo in rows], next_cursor=cursor
    )


@router.post(
    "/{site_id}/listings",
    status_code=201,
    summary="List capacity for one process and month at the site",
    responses=problems(403, 404, 409, 413, 415, 422),
    response_model=ListingPublic,
    dependencies=[IdempotencyDep],
    tags=["listings"],
)
def create_listing(listing_in: ListingCreate, site: SiteDep, tx: Tx) -> Response:
    listing = repo.listings.create_listing(session=tx.session, site=site, listing_in=listing_in)
    return tx.respond(
        repo.listings.to_public(listing, site.cdmo_id),
        status_code=201,
        headers={"Location": f"/v1/listings/{listing.id}", "ETag": etag(listing.version)},
    )
