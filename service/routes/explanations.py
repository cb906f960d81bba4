"""Explanations (why this site, why not placed) and run analytics (utilisation, bottlenecks).

Thin: visibility here and in the load-or-404 dependencies, the work in
:mod:`service.flows.explanations` (computed from the run's stored snapshot with the matcher).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from schemas.api.explanations import (
    ProjectExplanation,
    ProposalExplanation,
    RunBottlenecks,
    RunUtilisation,
)
from schemas.market import ProcessKind, YearMonth
from service.auth import Principal
from service.deps import ID_PATTERN, CurrentOrg, PageDep, ProjectDep, ProposalDep, SessionDep
from service.errors import InvalidFieldError, NotFoundError
from service.flows.explanations import (
    UtilisationFilters,
    project_explanation,
    proposal_explanation,
    run_bottlenecks,
    run_utilisation,
)
from service.openapi import problems
from service.routes.runs import RunDep

router = APIRouter(tags=["explanations"])


def _not_a_cdmo(principal: Principal, what: str) -> None:
    """A CDMO may see a project proposed to it, but not the maker's explanation (404)."""
    if principal.is_cdmo:
        raise NotFoundError(f"{what} not found")


@router.get(
    "/v1/projects/{project_id}/explanation",
    summary="Why the latest committed run placed the project where it did (value in parts, "
    "next best sites) or why it could not (the binding rule, with figures); the maker, "
    "operators",
    responses=problems(404, 409, 422),
)
def explain_project(
    project: ProjectDep, principal: CurrentOrg, session: SessionDep
) -> ProjectExplanation:
    _not_a_cdmo(principal, f"project {project.id}")
    return project_explanation(session, project)


@router.get(
    "/v1/proposals/{proposal_id}/explanation",
    summary="Why the proposal's site was chosen, in the site's own figures (nothing of the "
    "maker's confidential fields); the CDMO proposed to, operators",
    responses=problems(404, 409, 422),
)
def explain_proposal(
    proposal: ProposalDep, principal: CurrentOrg, session: SessionDep
) -> ProposalExplanation:
    if principal.is_maker:  # the maker has the project's explanation, with its own figures
        raise NotFoundError(f"proposal {proposal.id} not found")
    return proposal_explanation(session, proposal)


@router.get(
    "/v1/match-runs/{run_id}/utilisation",
    summary="Site x process x month of the run's market: capacity, reserved, used by the "
    "run, free; totals per process and month (operators)",
    responses=problems(404, 409, 422),
)
def get_run_utilisation(
    run: RunDep,
    session: SessionDep,
    page: PageDep,
    site_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    process: ProcessKind | None = None,
    month_from: Annotated[YearMonth | None, Query()] = None,
    month_to: Annotated[YearMonth | None, Query()] = None,
) -> RunUtilisation:
    if month_from and month_to and month_from > month_to:
        raise InvalidFieldError("month_from", "is after month_to", location="query")
    filters = UtilisationFilters(
        site_id=site_id,
        process=process.value if process else None,
        month_from=month_from,
        month_to=month_to,
    )
    return run_utilisation(session, run, filters, page)


@router.get(
    "/v1/match-runs/{run_id}/bottlenecks",
    summary="The run's unmet demand by category and market, and which certificate, market "
    "or capacity binds (operators)",
    responses=problems(404, 409, 422),
)
def get_run_bottlenecks(run: RunDep, session: SessionDep) -> RunBottlenecks:
    return run_bottlenecks(session, run)
