"""Makers' projects. Visible to their maker and operators; to a CDMO, redacted, while proposed
to it. Anything else is 404, so a project's existence never leaks."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from schemas.api import (
    Page,
    ProjectCreate,
    ProjectPublic,
    ProjectStatus,
    ProjectUpdate,
    ProjectView,
    ProposalPublic,
)
from schemas.market import DeviceCategory, Region, RegulatoryClass, Stage
from service import repositories as repo
from service.auth import Principal
from service.deps import (
    ID_PATTERN,
    CurrentOrg,
    IfMatch,
    IfMatchOptional,
    MakerOrOperator,
    PageDep,
    ProjectDep,
    ProjectRowDep,
    ServicesDep,
    SessionDep,
    maker_or_operator,
)
from service.idempotency import IdempotencyDep
from service.openapi import problems
from service.repositories.common import etag
from service.repositories.projects import ProjectFilters
from service.repositories.proposals import ProposalFilters
from service.transactions import Answer, Tx
from service.trusted import answer_json

router = APIRouter(prefix="/v1/projects", tags=["projects"])


@router.post(
    "",
    status_code=201,
    summary="Post a project (makers for themselves; operators name maker_id)",
    response_model=ProjectPublic,
    responses=problems(403, 409, 413, 415, 422),
    dependencies=[IdempotencyDep],
)
def create_project(project_in: ProjectCreate, tx: Tx, principal: MakerOrOperator) -> Response:
    # The hot path: one statement (README "Under load"); the usual path below when it wrote
    # nothing (a reference check failed, the Idempotency-Key was taken: it says which).
    project, build, params = repo.projects.create_at_once(
        principal=principal, project_in=project_in
    )
    answer = created_answer(project)
    if tx.commit_at_once(build, params, answer):
        return answer.response()
    project = repo.projects.create_project(
        session=tx.session, principal=principal, project_in=project_in
    )
    return tx.commit_answer(created_answer(project))


def created_answer(project: Any) -> Answer:
    """The answer to a project created, on the usual path and the lean one (service.hotpath)."""
    return Answer.of(
        ProjectPublic.model_validate(project, from_attributes=True),
        status_code=201,
        headers={"Location": f"/v1/projects/{project.id}", "ETag": etag(project.version)},
    )


@router.get(
    "",
    summary="List the projects the caller may see, filtered, a page at a time",
    response_model=Page[ProjectView],
    responses=problems(422),
)
async def list_projects(
    services: ServicesDep,
    principal: CurrentOrg,
    page: PageDep,
    status: ProjectStatus | None = None,
    category: DeviceCategory | None = None,
    device_class: RegulatoryClass | None = None,
    stage: Stage | None = None,
    market: Annotated[Region | None, Query(description="Projects sold in this market.")] = None,
    maker_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
) -> Response:
    filters = ProjectFilters(
        status=status,
        category=category,
        device_class=device_class,
        stage=stage,
        market=market,
        maker_id=maker_id,
    )
    rows, cursor = await repo.projects.read_projects(
        reads=services.db.reads, principal=principal, filters=filters, page=page
    )
    return page_answer(rows, cursor, principal).response()


def page_answer(rows: list[Any], cursor: str | None, principal: Principal) -> Answer:
    """The answer to a list of projects, on the usual path and the lean one
    (service.hotpath): a ``Page[ProjectView]`` of rows not validated again
    (service.trusted), serialised here, once (FastAPI would validate it against
    response_model)."""
    items = [repo.projects.view(p, principal) for p in rows]
    return Answer(200, {}, answer_json({"items": items, "next_cursor": cursor}))


@router.get(
    "/{project_id}",
    summary="One project (full for its maker and operators, redacted for a CDMO)",
    response_model=ProjectView,
    responses=problems(404, 422),
)
async def get_project(project: ProjectRowDep, principal: CurrentOrg) -> Response:
    return project_answer(project, principal).response()


def project_answer(project: Any, principal: Principal) -> Answer:
    """The answer to a read of ``project`` (a row with its columns by name), on the usual
    path and the lean one (service.hotpath)."""
    view = repo.projects.view(project, principal)
    return Answer(200, {"ETag": etag(project.version)}, answer_json(view))


@router.patch(
    "/{project_id}",
    summary="Change a project (If-Match required)",
    response_model=ProjectPublic,
    responses=problems(403, 404, 409, 412, 413, 415, 422, 428),
    dependencies=[Depends(maker_or_operator)],
)
def update_project(
    patch: ProjectUpdate, project: ProjectDep, principal: CurrentOrg, expected: IfMatch, tx: Tx
) -> Response:
    project = repo.projects.update_project(
        session=tx.session, principal=principal, project=project, patch=patch, expected=expected
    )
    return tx.respond(
        ProjectPublic.model_validate(project, from_attributes=True),
        headers={"ETag": etag(project.version)},
    )


@router.delete(
    "/{project_id}",
    status_code=204,
    summary="Delete a draft, open or closed project",
    responses=problems(403, 404, 409, 412, 422),
    dependencies=[Depends(maker_or_operator)],
)
def delete_project(project: ProjectDep, expected: IfMatchOptional, tx: Tx) -> Response:
    repo.projects.delete_project(session=tx.session, project=project, expected=expected)
    return tx.respond(None, status_code=204)


@router.get(
    "/{project_id}/proposals",
    summary="Proposals of the project (a CDMO sees only those to its own sites)",
    responses=problems(404, 422),
    tags=["proposals"],
)
def list_project_proposals(
    project: ProjectDep, principal: CurrentOrg, session: SessionDep, page: PageDep
) -> Page[ProposalPublic]:
    rows, cursor = repo.proposals.list_proposals(
        session=session,
        principal=principal,
        filters=ProposalFilters(project_id=project.id),
        page=page,
    )
    return Page(items=rows, next_cursor=cursor)
