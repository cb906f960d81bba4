"""Capacity listings by id: read, replace (PUT), change (PATCH), delete; If-Match on writes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from schemas.api import ListingPublic, ListingUpdate, ListingValues, Page
from schemas.market import ProcessKind, YearMonth
from service import repositories as repo
from service.deps import (
    ID_PATTERN,
    CdmoOrOperator,
    CurrentOrg,
    IfMatch,
    IfMatchHeader,
    IfMatchOptional,
    ListingDep,
    ListingId,
    PageDep,
    SessionDep,
    cdmo_or_operator,
    parse_if_match,
    parse_if_match_or_none,
)
from service.models import Listing
from service.openapi import problems
from service.repositories.common import etag
from service.repositories.listings import ListingFilters
from service.transactions import Answer, Transaction, Tx

router = APIRouter(
    prefix="/v1/listings", tags=["listings"], dependencies=[Depends(cdmo_or_operator)]
)


def _with_etag(listing: Listing, cdmo_id: str, response: Response) -> ListingPublic:
    """The listing as answered by the routes below, its version in the ETag header."""
    response.headers["ETag"] = etag(listing.version)
    return repo.listings.to_public(listing, cdmo_id)


def _written(tx: Transaction, listing: Listing, cdmo_id: str) -> Response:
    return tx.respond(
        repo.listings.to_public(listing, cdmo_id), headers={"ETag": etag(listing.version)}
    )


@router.get(
    "",
    summary="List capacity listings (CDMOs: their own; operators: all)",
    responses=problems(403, 422),
)
def list_listings(
    session: SessionDep,
    principal: CdmoOrOperator,
    page: PageDep,
    site_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    process: ProcessKind | None = None,
    month_from: YearMonth | None = None,
    month_to: YearMonth | None = None,
) -> Page[ListingPublic]:
    filters = ListingFilters(
        site_id=site_id, process=process, month_from=month_from, month_to=month_to
    )
    rows, cursor = repo.listings.list_listings(
        session=session, principal=principal, filters=filters, page=page
    )
    return Page(
        items=[repo.listings.to_public(lst, cdmo) for lst, cdmo in rows], next_cursor=cursor
    )


@router.get("/{listing_id}", summary="One listing", responses=problems(403, 404, 422))
async def get_listing(loaded: ListingDep, response: Response) -> ListingPublic:
    listing, cdmo_id = loaded
    return _with_etag(listing, cdmo_id, response)


@router.put(
    "/{listing_id}",
    summary="Replace a listing's hours and price (If-Match required)",
    response_model=ListingPublic,
    responses=problems(403, 404, 409, 412, 413, 415, 422, 428),
)
def replace_listing(
    values: ListingValues, loaded: ListingDep, expected: IfMatch, tx: Tx
) -> Response:
    listing, cdmo_id = loaded
    listing = repo.listings.replace_listing(
        session=tx.session, listing=listing, values=values, expected=expected
    )
    return _written(tx, listing, cdmo_id)


@router.patch(
    "/{listing_id}",
    summary="Change some of a listing's values (If-Match required)",
    response_model=ListingPublic,
    responses=problems(403, 404, 409, 412, 413, 415, 422, 428),
)
def patch_listing(
    patch: ListingUpdate,
    listing_id: ListingId,
    principal: CurrentOrg,
    tx: Tx,
    if_match: IfMatchHeader = None,
) -> Response:
    # The hot path: one statement that writes only if every check passes (README "Under
    # load"); otherwise the usual path below answers what failed (404, 428, 412, 409, 422).
    expected = parse_if_match_or_none(if_match)
    at_once = expected and repo.listings.patch_at_once(
        principal=principal, listing_id=listing_id, patch=patch, expected=expected
    )
    if at_once and (row := tx.commit_at_once(*at_once)):
        return patched_answer(row).response()
    listing, cdmo_id = repo.listings.get_listing(
        session=tx.session, principal=principal, listing_id=listing_id, lock=True
    )
    expected = parse_if_match(if_match, required=True)
    assert expected is not None
    listing = repo.listings.patch_listing(
        session=tx.session, listing=listing, patch=patch, expected=expected
    )
    return _written(tx, listing, cdmo_id)


def patched_answer(row: Any) -> Answer:
    """The answer to a PATCH written in one statement (a row of
    repo.listings.patch_at_once's statement), on the usual path and the lean one
    (service.hotpath)."""
    listing, cdmo_id = repo.listings.from_row(row)
    return Answer.of(
        repo.listings.to_public(listing, cdmo_id), headers={"ETag": etag(listing.version)}
    )


@router.delete(
    "/{listing_id}",
    status_code=204,
    summary="Delete a listing",
    responses=problems(403, 404, 409, 412, 422),
)
def delete_listing(loaded: ListingDep, expected: IfMatchOptional, tx: Tx) -> Response:
    repo.listings.delete_listing(session=tx.session, listing=loaded[0], expected=expected)
    return tx.respond(None, status_code=204)
