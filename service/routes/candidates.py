"""Instant candidates: where a project could be placed now, and what keeps the near misses
out. Computed against the current listings with the optimiser's rules; nothing is written."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

import service.flows.candidates as flow
from schemas.api import ProjectCreate
from schemas.api.candidates import DEFAULT_CANDIDATES, MAX_CANDIDATES, CandidatesPublic
from service.deps import CurrentOrg, MakerOrOperator, ProjectDep, ServicesDep, SessionDep
from service.errors import NotFoundError
from service.openapi import problems

router = APIRouter(tags=["candidates"])

Limit = Annotated[
    int,
    Query(
        ge=1,
        le=MAX_CANDIDATES,
        description="Candidates (and near misses) per source, best first.",
    ),
]


@router.get(
    "/v1/projects/{project_id}/candidates",
    summary="The project's best eligible sites now, and the near misses with the rule that "
    "excludes each (its maker and operators)",
    response_model=CandidatesPublic,
    responses=problems(404, 422),
)
def project_candidates(
    project: ProjectDep,
    principal: CurrentOrg,
    services: ServicesDep,
    session: SessionDep,
    limit: Limit = DEFAULT_CANDIDATES,
) -> Response:
    if not (principal.is_operator or project.maker_id == principal.org_id):
        # A CDMO may see a project proposed to it, never the competition for it.
        raise NotFoundError(f"project {project.id} not found")
    return _json(
        flow.project_candidates(db=services.db, session=session, project=project, limit=limit)
    )


@router.post(
    "/v1/candidates",
    summary="Candidates for a draft project body, before posting it (makers and operators; "
    "nothing is stored)",
    description="The body is that of `POST /v1/projects`, validated the same way.",
    response_model=CandidatesPublic,
    responses=problems(403, 413, 415, 422),
)
def draft_candidates(
    draft: ProjectCreate,
    principal: MakerOrOperator,
    services: ServicesDep,
    _slot: SessionDep,  # holds a request slot; the flow reads in a read-only session
    limit: Limit = DEFAULT_CANDIDATES,
) -> Response:
    return _json(
        flow.draft_candidates(db=services.db, principal=principal, draft=draft, limit=limit)
    )


def _json(body: CandidatesPublic) -> Response:
    """Serialised once by pydantic (the flow builds the model; FastAPI would validate and
    encode it again through ``response_model``, which stays for the OpenAPI document)."""
    return Response(body.model_dump_json(), media_type="application/json")
