"""Proposals: operators (and, later, optimiser batches) put projects to CDMO sites."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from schemas.api import Page, ProposalCreate, ProposalDecision, ProposalPublic, ProposalStatus
from service import repositories as repo
from service.auth import Principal
from service.deps import ID_PATTERN, CurrentOrg, OperatorOrg, PageDep, ProposalDep, SessionDep
from service.errors import InvalidFieldError, NotFoundError, PermissionDeniedError
from service.idempotency import IdempotencyDep
from service.openapi import problems
from service.repositories.proposals import ProposalFilters
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
def create_proposal(proposal_in: ProposalCreate, tx: Tx, principal: OperatorOrg) -> Response:
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
        repo.proposals.to_public(session, proposal),
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
    principal: CurrentOrg,
    page: PageDep,
    project_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    site_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    status: ProposalStatus | None = None,
) -> Page[ProposalPublic]:
    filters = ProposalFilters(project_id=project_id, site_id=site_id, status=status)
    rows, cursor = repo.proposals.list_proposals(
        session=session, principal=principal, filters=filters, page=page
    )
    return Page(items=rows, next_cursor=cursor)


@router.get("/{proposal_id}", summary="One proposal", responses=problems(404, 422))
def get_proposal(proposal: ProposalDep, session: SessionDep) -> ProposalPublic:
    return repo.proposals.to_public(session, proposal)


async def _deciding(principal: CurrentOrg) -> Principal:
    """A role check, so it runs before the proposal is loaded (403 before 404)."""
    if principal.is_maker:
        raise PermissionDeniedError("makers do not decide proposals")
    return principal


@router.patch(
    "/{proposal_id}",
    summary="Accept or decline (the CDMO proposed to), or withdraw (operators)",
    response_model=ProposalPublic,
    responses=problems(403, 404, 409, 413, 415, 422),
)
def decide_proposal(
    decision: ProposalDecision,
    principal: Annotated[Principal, Depends(_deciding)],
    proposal: ProposalDep,
    tx: Tx,
) -> Response:
    proposal = repo.proposals.decide_proposal(
        session=tx.session,
        principal=principal,
        proposal=proposal,
        target=ProposalStatus(decision.status),
    )
    return tx.respond(repo.proposals.to_public(tx.session, proposal))
