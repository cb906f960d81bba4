"""FastAPI dependencies, as ``Annotated`` aliases: the session, the caller, role guards,
page parameters, ``If-Match``, and load-or-404 for every resource."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Header, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Row
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from service import repositories as repo
from service.auth import Principal
from service.errors import (
    BodyValidationError,
    InvalidFieldError,
    PermissionDeniedError,
    PreconditionRequiredError,
    UnauthenticatedError,
)
from service.middleware import PRINCIPAL_STATE
from service.models import Listing, Organisation, Project, Proposal, Site
from service.pagination import DEFAULT_LIMIT, MAX_LIMIT, PageParams, decode_cursor
from service.runtime import Services


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_session(request: Request, services: ServicesDep) -> AsyncIterator[Session]:
    """One session per request, opened once the request holds a slot (503 after waiting
    ``queue_timeout_s``): reads in autocommit, writes in one transaction that the route
    commits (service.transactions). Writes on SQLite take the lock up front."""
    write = request.method not in ("GET", "HEAD", "OPTIONS")
    db = services.db
    async with db.slots.hold():
        session = db.session(write=write)
        try:
            yield session
        finally:
            if db.closes_without_io(write=write) or not session.in_transaction():
                session.close()
            else:
                await run_in_threadpool(session.close)  # rolls back what was not committed


SessionDep = Annotated[Session, Depends(get_session)]

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An organisation's API key: `Authorization: Bearer ck_...`.",
)


async def get_principal(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, as resolved (and rate-limited) by
    :class:`service.middleware.AuthenticationMiddleware` before the body was read."""
    principal = getattr(request.state, PRINCIPAL_STATE, None)
    if not isinstance(principal, Principal):
        raise UnauthenticatedError("missing API key: send Authorization: Bearer <key>")
    return principal


CurrentOrg = Annotated[Principal, Depends(get_principal)]


def _require(*kinds: str, action: str):  # type: ignore[no-untyped-def]
    async def guard(principal: CurrentOrg) -> Principal:
        if principal.kind not in kinds:
            raise PermissionDeniedError(f"{principal.kind} organisations may not {action}")
        return principal

    return guard


operator_only = _require("operator", action="do this")
maker_or_operator = _require("maker", "operator", action="manage projects")
cdmo_or_operator = _require("cdmo", "operator", action="see or manage sites and listings")

OperatorOrg = Annotated[Principal, Depends(operator_only)]
MakerOrOperator = Annotated[Principal, Depends(maker_or_operator)]
CdmoOrOperator = Annotated[Principal, Depends(cdmo_or_operator)]


async def page_params(
    cursor: Annotated[
        str | None, Query(max_length=200, description="`next_cursor` of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size.")] = DEFAULT_LIMIT,
) -> PageParams:
    return PageParams(limit=limit, after=decode_cursor(cursor) if cursor else None)


PageDep = Annotated[PageParams, Depends(page_params)]

MAX_IF_MATCH_TAGS = 20
_ETAG_RE = re.compile(r'^(?:W/)?"?(\d{1,18})"?$')


def parse_if_match(value: str | None, *, required: bool) -> frozenset[int] | None:
    if value is None or not value.strip():
        if required:
            raise PreconditionRequiredError(
                'send If-Match: "<version>" with the ETag of your last read'
            )
        return None
    tags = value.split(",")
    if len(tags) > MAX_IF_MATCH_TAGS:
        raise InvalidFieldError(
            "If-Match",
            f"at most {MAX_IF_MATCH_TAGS} entity tags",
            location="header",
            code="too_many_etags",
        )
    versions = set()
    for tag in tags:
        tag = tag.strip()
        if tag == "*":
            raise PreconditionRequiredError(
                "If-Match: * would overwrite blindly; send the ETag of your last read"
            )
        match = _ETAG_RE.match(tag)
        if match is None:
            raise InvalidFieldError(
                "If-Match",
                'expected an entity tag like "3"',
                location="header",
                code="etag_invalid",
            )
        if not tag.startswith("W/"):  # a weak tag never matches strongly
            versions.add(int(match.group(1)))
    return frozenset(versions)


def parse_if_match_or_none(value: str | None) -> frozenset[int] | None:
    """The versions of a required If-Match, or None where :func:`parse_if_match` would raise
    (a route that checks the resource first raises it later, in the usual order)."""
    try:
        return parse_if_match(value, required=True)
    except (PreconditionRequiredError, InvalidFieldError):
        return None


_IF_MATCH_DOC = 'The ETag of your last read, e.g. `"3"`. Stale -> 412, missing -> 428.'
IfMatchHeader = Annotated[
    str | None, Header(alias="If-Match", description=_IF_MATCH_DOC, examples=['"3"'])
]


async def if_match_required(if_match: IfMatchHeader = None) -> frozenset[int]:
    versions = parse_if_match(if_match, required=True)
    assert versions is not None
    return versions


async def if_match_optional(if_match: IfMatchHeader = None) -> frozenset[int] | None:
    return parse_if_match(if_match, required=False)


IfMatch = Annotated[frozenset[int], Depends(if_match_required)]
IfMatchOptional = Annotated[frozenset[int] | None, Depends(if_match_optional)]

ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
"""What every id of ours looks like (prefix, underscore, ULID; or a demo name)."""
_ID = ID_PATTERN

# --- request bodies -----------------------------------------------------------------------


def has_nul(value: Any) -> bool:
    """Whether a parsed JSON body holds a NUL character anywhere (the lean path hands it
    over: :func:`reject_nul_characters` answers it)."""
    paths: list[list[str | int]] = []
    _nul_paths(value, [], paths)
    return bool(paths)


def _nul_paths(value: Any, path: list[str | int], out: list[list[str | int]]) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            out.append(path)
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                out.append([*path, key])
            _nul_paths(item, [*path, key], out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _nul_paths(item, [*path, i], out)


async def reject_nul_characters(request: Request) -> None:
    """JSON may carry ``\\u0000``; PostgreSQL text and JSONB cannot store it. Refuse it here,
    with the exact fields, rather than fail in the database."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    try:
        body = await request.json()
    except (ValueError, RecursionError):
        return  # not JSON: the route's own body parsing reports it
    paths: list[list[str | int]] = []
    _nul_paths(body, [], paths)
    if paths:
        raise BodyValidationError.from_errors(
            [
                {
                    "loc": tuple(p),
                    "msg": "NUL characters (\\u0000) are not allowed",
                    "type": "string_nul",
                }
                for p in paths
            ]
        )


# --- load-or-404 ---------------------------------------------------------------------------


def load_org(
    org_id: Annotated[str, Path(pattern=_ID)], session: SessionDep, principal: CurrentOrg
) -> Organisation:
    return repo.orgs.get_org(session=session, principal=principal, org_id=org_id)


def load_site(
    site_id: Annotated[str, Path(pattern=_ID)], session: SessionDep, principal: CurrentOrg
) -> Site:
    return repo.sites.get_site(session=session, principal=principal, site_id=site_id)


ListingId = Annotated[str, Path(pattern=_ID)]


def load_listing(
    listing_id: ListingId,
    session: SessionDep,
    principal: CurrentOrg,
    request: Request,
) -> tuple[Listing, str]:
    return repo.listings.get_listing(
        session=session,
        principal=principal,
        listing_id=listing_id,
        lock=request.method in ("PUT", "PATCH", "DELETE"),
    )


def load_project(
    project_id: Annotated[str, Path(pattern=_ID)], session: SessionDep, principal: CurrentOrg
) -> Project:
    return repo.projects.get_project(session=session, principal=principal, project_id=project_id)


def load_proposal(
    proposal_id: Annotated[str, Path(pattern=_ID)], session: SessionDep, principal: CurrentOrg
) -> Proposal:
    return repo.proposals.get_proposal(
        session=session, principal=principal, proposal_id=proposal_id
    )


async def read_project(
    project_id: Annotated[str, Path(pattern=_ID)], principal: CurrentOrg, services: ServicesDep
) -> Row[Any]:
    """:func:`load_project` for the read endpoints: one statement awaited on the event loop
    (service.db.LoopReads), the project's row rather than an ORM object."""
    return await repo.projects.read_project(
        reads=services.db.reads, principal=principal, project_id=project_id
    )


OrgDep = Annotated[Organisation, Depends(load_org)]
SiteDep = Annotated[Site, Depends(load_site)]
ListingDep = Annotated[tuple[Listing, str], Depends(load_listing)]
ProjectDep = Annotated[Project, Depends(load_project)]
ProjectRowDep = Annotated[Row[Any], Depends(read_project)]
ProposalDep = Annotated[Proposal, Depends(load_proposal)]
