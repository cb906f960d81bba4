"""Organisations, their API keys, and the CDMO directory."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from schemas.api import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPublic,
    CdmoDirectoryEntry,
    OrganisationCreate,
    OrganisationPublic,
    OrgKind,
    Page,
)
from service import repositories as repo
from service.deps import CurrentOrg, OperatorOrg, OrgDep, PageDep, ServicesDep, SessionDep
from service.idempotency import IdempotencyDep
from service.openapi import problems
from service.transactions import Tx

router = APIRouter(prefix="/v1", tags=["organisations"])


@router.post(
    "/orgs",
    status_code=201,
    summary="Create an organisation (operators)",
    response_model=OrganisationPublic,
    responses=problems(403, 409, 413, 415, 422),
    dependencies=[IdempotencyDep],
)
def create_org(org_in: OrganisationCreate, tx: Tx, _op: OperatorOrg) -> Response:
    org = repo.orgs.create_org(session=tx.session, org_in=org_in)
    return tx.respond(
        repo.orgs.to_public(org), status_code=201, headers={"Location": f"/v1/orgs/{org.id}"}
    )


@router.get(
    "/orgs",
    summary="List organisations (operators: all; others: their own)",
    responses=problems(422),
)
def list_orgs(
    session: SessionDep,
    principal: CurrentOrg,
    page: PageDep,
    kind: Annotated[OrgKind | None, Query(description="Only this kind.")] = None,
) -> Page[OrganisationPublic]:
    rows, cursor = repo.orgs.list_orgs(session=session, principal=principal, kind=kind, page=page)
    return Page(items=[repo.orgs.to_public(o) for o in rows], next_cursor=cursor)


@router.get("/orgs/me", summary="The caller's organisation", responses=problems())
def my_org(session: SessionDep, principal: CurrentOrg) -> OrganisationPublic:
    org = repo.orgs.get_org(session=session, principal=principal, org_id=principal.org_id)
    return repo.orgs.to_public(org)


@router.get(
    "/orgs/{org_id}",
    summary="One organisation (operators, or the organisation itself)",
    responses=problems(404, 422),
)
async def get_org(org: OrgDep) -> OrganisationPublic:
    return repo.orgs.to_public(org)


@router.post(
    "/orgs/{org_id}/keys",
    status_code=201,
    summary="Create an API key; the key is shown once (operators, or the organisation itself)",
    description="Not idempotent on purpose: replaying the response would mean keeping the "
    "plaintext key in the idempotency store. A retried call makes a second key; revoke it.",
    response_model=ApiKeyCreated,
    responses=problems(404, 413, 415, 422),
)
def create_key(key_in: ApiKeyCreate, org: OrgDep, tx: Tx, services: ServicesDep) -> Response:
    row, plaintext = repo.orgs.create_api_key(
        session=tx.session,
        org=org,
        label=key_in.label,
        secret=services.settings.auth.hmac_secret.get_secret_value(),
    )
    created = ApiKeyCreated(**repo.orgs.key_to_public(row).model_dump(), key=plaintext)
    return tx.respond(created, status_code=201)


@router.get(
    "/orgs/{org_id}/keys",
    summary="List an organisation's API keys (never the secrets)",
    responses=problems(404, 422),
)
def list_keys(org: OrgDep, session: SessionDep, page: PageDep) -> Page[ApiKeyPublic]:
    rows, cursor = repo.orgs.list_api_keys(session=session, org=org, page=page)
    return Page(items=[repo.orgs.key_to_public(k) for k in rows], next_cursor=cursor)


@router.delete(
    "/orgs/{org_id}/keys/{key_id}",
    summary="Revoke an API key (idempotent)",
    response_model=ApiKeyPublic,
    responses=problems(404, 422),
)
def revoke_key(
    org: OrgDep,
    tx: Tx,
    services: ServicesDep,
    key_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")],
) -> Response:
    key = repo.orgs.revoke_api_key(session=tx.session, org=org, key_id=key_id)
    response = tx.respond(repo.orgs.key_to_public(key))
    services.auth.revoked(key.key_hash)  # after the commit: no process may re-cache it
    return response


@router.get(
    "/cdmos",
    summary="Directory of CDMOs (any caller): ids to put in a project's excluded_cdmo_ids",
    responses=problems(422),
)
def list_cdmos(session: SessionDep, _who: CurrentOrg, page: PageDep) -> Page[CdmoDirectoryEntry]:
    rows, cursor = repo.orgs.list_cdmos(session=session, page=page)
    return Page(
        items=[CdmoDirectoryEntry(id=o.id, name=o.name, country=o.country) for o in rows],
        next_cursor=cursor,
    )
