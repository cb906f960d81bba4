"""Proposals: operators (and, later, optimiser batches) put projects to CDMO sites."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from schemas.api import Page, ProposalCreate, ProposalDecision, ProposalPublic, ProposalStatus
from service import repositories as repo
from service.deps import (
    ID_PATTERN,
    CurrentOrg,
    OperatorOrg,
    PageDep,
    ProposalDep,
    ServicesDep,
    SessionDep,
)
from service.errors import InvalidFieldError, NotFoundError
from service.idempotency import IdempotencyDep
from service.openapi import problems
from service.repositories.proposals import ProposalFilters
from service.routes.deals import apply_move, lifecycle_problems
from service.transactions import Tx

router = APIRouter(prefix="/v1/proposals", tags=["proposals"])


@router.post(
    "",
    status_code=201,
    summary="Propose a project to a CDMO site (operators); 200 if already proposed there",
    responses={
        200: {"model": ProposalPublic, "description": "Already proposed: unchanged."},
        **problems(403, 409, 413, 415, 422),
    },
    response_model=ProposalPublic,
    dependencies=[IdempotencyDep],
)
def create_proposal(
    proposal_in: ProposalCreate, tx: Tx, principal: OperatorOrg, services: ServicesDep
) -> Response:
    session = tx.session
    try:
        project = repo.projects.get_project(
            session=session, principal=principal, project_id=proposal_in.project_id
        )
    except NotFoundError as exc:
        raise InvalidFieldError("project_id", "no such project", code="unknown_reference") from exc
    try:
        site = repo.sites.get_site(
            session=session, principal=principal, site_id=proposal_in.site_id
        )
    except NotFoundError as exc:
        raise InvalidFieldError("site_id", "no such site", code="unknown_reference") from exc
    proposal, created = repo.proposals.create_proposal(
        session=session,
        project=project,
        site=site,
        role=proposal_in.role,
        created_by=principal.org_id,
        batch_id=proposal_in.batch_id,
    )
    return tx.respond(
        repo.proposals.to_public(session, proposal, ttl_s=services.settings.deals.proposal_ttl_s),
        status_code=201 if created else 200,
        headers={"Location": f"/v1/proposals/{proposal.id}"},
    )


@router.get(
    "",
    summary="Proposals the caller may see (operators: all; CDMOs: to their sites; "
    "makers: of their projects)",
    responses=problems(422),
)
def list_proposals(
    session: SessionDep,
    services: ServicesDep,
    principal: CurrentOrg,
    page: PageDep,
    project_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    site_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    status: ProposalStatus | None = None,
) -> Page[ProposalPublic]:
    filters = ProposalFilters(project_id=project_id, site_id=site_id, status=status)
    rows, cursor = repo.proposals.list_proposals(
        session=session,
        principal=principal,
        filters=filters,
        page=page,
        ttl_s=services.settings.deals.proposal_ttl_s,
    )
    return Page(items=rows, next_cursor=cursor)


@router.get("/{proposal_id}", summary="One proposal", responses=problems(404, 422))
def get_proposal(
    proposal: ProposalDep, session: SessionDep, services: ServicesDep
) -> ProposalPublic:
    ttl = services.settings.deals.proposal_ttl_s
    return repo.proposals.to_public(session, proposal, ttl_s=ttl)


@router.patch(
    "/{proposal_id}",
    summary="Move the proposal through its lifecycle (same rules as the action endpoints)",
    description='`{"status": "accepted"|"declined"}` (the CDMO proposed to), '
    '`"confirmed"|"withdrawn"` (the project\'s maker); operators may make any of them. '
    "Equivalent to `POST /v1/proposals/{id}/accept|decline|confirm|withdraw`.",
    response_model=ProposalPublic,
    responses={**lifecycle_problems(), **problems(413, 415)},
)
def decide_proposal(
    decision: ProposalDecision,
    proposal: ProposalDep,
    principal: CurrentOrg,
    services: ServicesDep,
    tx: Tx,
) -> Response:
    return apply_move(tx, services, principal, proposal.id, ProposalStatus(decision.status))
