"""Makers' projects. A maker sees only its own; a CDMO sees one (redacted) only while it is
actively proposed to one of its sites; operators see all."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Row,
    Select,
    String,
    any_,
    bindparam,
    cast,
    exists,
    false,
    func,
    insert,
)
from sqlalchemy import select as core_select
from sqlmodel import Session, col, select

from schemas.api import (
    ACTIVE_PROPOSAL_STATUSES,
    OrgKind,
    ProjectCreate,
    ProjectFields,
    ProjectPublic,
    ProjectRedacted,
    ProjectStatus,
    ProjectUpdate,
    ProposalStatus,
)
from schemas.api.common import as_utc
from schemas.market import DeviceCategory, ProcessLoad, Region, RegulatoryClass, Stage
from service.auth import Principal
from service.db import (
    LoopReads,
    RawReads,
    RawStatement,
    bump_market_version,
    market_bump_cte,
    market_bump_params,
)
from service.errors import (
    InvalidFieldError,
    InvalidStateError,
    NotFoundError,
    PermissionDeniedError,
)
from service.ids import new_id
from service.models import Organisation, Project, Proposal, utcnow
from service.pagination import PageParams, keyset, page_of, page_statement
from service.repositories.common import (
    check_version,
    json_array_contains_on,
    merge_patch,
    versioned_delete,
    versioned_update,
    where_visible,
)
from service.repositories.orgs import MAKER_OWNS_PROJECTS, owning_org, requested_owner
from service.repositories.proposals import release_hold
from service.trusted import RowView, in_field_order

_ACTIVE = [s.value for s in ACTIVE_PROPOSAL_STATUSES]

# Which status a maker may move a project to, from which status. Operators may do any move.
_MAKER_MOVES: dict[ProjectStatus, frozenset[ProjectStatus]] = {
    ProjectStatus.DRAFT: frozenset({ProjectStatus.OPEN, ProjectStatus.CLOSED}),
    ProjectStatus.OPEN: frozenset({ProjectStatus.DRAFT, ProjectStatus.CLOSED}),
    ProjectStatus.PROPOSED: frozenset({ProjectStatus.CLOSED}),
    ProjectStatus.MATCHED: frozenset({ProjectStatus.CLOSED}),
    ProjectStatus.CLOSED: frozenset({ProjectStatus.DRAFT, ProjectStatus.OPEN}),
}
_EDITABLE = frozenset({ProjectStatus.DRAFT, ProjectStatus.OPEN, ProjectStatus.PROPOSED})
_DELETABLE = frozenset({ProjectStatus.DRAFT, ProjectStatus.OPEN, ProjectStatus.CLOSED})


@dataclass(frozen=True)
class ProjectFilters:
    status: ProjectStatus | None = None
    category: DeviceCategory | None = None
    device_class: RegulatoryClass | None = None
    stage: Stage | None = None
    market: Region | None = None
    maker_id: str | None = None


def _proposed_to(cdmo_id: Any) -> Any:
    return exists().where(
        col(Proposal.project_id) == col(Project.id),
        col(Proposal.cdmo_id) == cdmo_id,
        col(Proposal.status).in_(_ACTIVE),
    )


def _visible(principal: Principal) -> Any:
    return _visible_to(principal.kind, principal.org_id)


def _visible_to(kind: OrgKind, org_id: Any) -> Any:
    """What an organisation of ``kind`` may see (``org_id``: its id, or a bound parameter)."""
    if kind == OrgKind.OPERATOR:
        return None
    if kind == OrgKind.MAKER:
        return col(Project.maker_id) == org_id
    if kind == OrgKind.CDMO:
        return _proposed_to(org_id)
    return false()


_COLUMNS = Project.__table__.columns  # type: ignore[attr-defined]
_TRUSTED = {  # what a project's row needs to serialise as its view model would
    "loads": in_field_order(ProcessLoad),
    "created_at": as_utc,
    "updated_at": as_utc,
}
_PUBLIC = RowView(ProjectPublic, _COLUMNS.keys(), _TRUSTED)
_REDACTED = RowView(ProjectRedacted, _COLUMNS.keys(), _TRUSTED)


def view(project: Any, principal: Principal) -> dict[str, Any]:
    """What ``principal`` may see of a project it can see at all: the ``ProjectPublic`` or
    ``ProjectRedacted`` of its row (columns by name), JSON-ready, not validated again
    (service.trusted)."""
    if principal.is_operator or project.maker_id == principal.org_id:
        return _PUBLIC(project)
    redacted = _REDACTED(project)
    if project.confidential:
        redacted["maker_id"] = redacted["title"] = None
    return redacted


def get_project(*, session: Session, principal: Principal, project_id: str) -> Project:
    stmt = select(Project).where(Project.id == project_id)
    project = session.exec(where_visible(stmt, _visible(principal))).first()
    if project is None:
        raise NotFoundError(f"project {project_id} not found")
    return project


async def read_project(*, reads: LoopReads, principal: Principal, project_id: str) -> Row[Any]:
    """:func:`get_project` on the event loop (service.db.LoopReads): the project's row (its
    columns by name, as :func:`view` reads them), or 404."""
    params = {"project_id": project_id, "org_id": principal.org_id}
    rows = await reads.rows(_read_statement(principal.kind), params)
    if not rows:
        raise NotFoundError(f"project {project_id} not found")
    return rows[0]


@cache
def _read_statement(kind: OrgKind) -> Select[Any]:
    """Built once per kind of caller (values bound): building and hashing a statement per
    request cost a third of a read's CPU."""
    stmt = core_select(*_COLUMNS).where(col(Project.id) == bindparam("project_id"))
    return where_visible(stmt, _visible_to(kind, bindparam("org_id")))


async def raw_read_project(*, raw: RawReads, principal: Principal, project_id: str) -> Any:
    """:func:`read_project` for the lean path (service.hotpath): the same statement on a raw
    connection; the row, or None (the usual path then answers the 404)."""
    stmt = _raw_read_statement(principal.kind)
    rows = await raw.rows(stmt, stmt.params(project_id=project_id, org_id=principal.org_id))
    return rows[0] if rows else None


@cache
def _raw_read_statement(kind: OrgKind) -> RawStatement:
    return RawStatement(_read_statement(kind))


async def raw_read_projects(
    *, raw: RawReads, principal: Principal, page: PageParams
) -> tuple[list[Any], str | None]:
    """:func:`read_projects` without filters, for the lean path (service.hotpath)."""
    stmt = _raw_page_statement(principal.kind, page.after is not None)
    params = stmt.params(org_id=principal.org_id, after=page.after, rows=page.limit + 1)
    return page_of(await raw.rows(stmt, params), _COLUMNS.id, page)


@cache
def _raw_page_statement(kind: OrgKind, after: bool) -> RawStatement:
    stmt = where_visible(core_select(*_COLUMNS), _visible_to(kind, bindparam("org_id")))
    after_id = bindparam("after", type_=_COLUMNS.id.type) if after else None
    return RawStatement(keyset(stmt, _COLUMNS.id, after_id, bindparam("rows")))


async def read_projects(
    *, reads: LoopReads, principal: Principal, filters: ProjectFilters, page: PageParams
) -> tuple[list[Row[Any]], str | None]:
    """A page of the projects ``principal`` may see, as rows (for :func:`view`)."""
    stmt = _filtered(core_select(*_COLUMNS), reads.dialect, principal, filters)
    rows = await reads.rows(page_statement(stmt, _COLUMNS.id, page))
    return page_of(rows, _COLUMNS.id, page)


def _filtered(stmt: Any, dialect: str, principal: Principal, filters: ProjectFilters) -> Any:
    stmt = where_visible(stmt, _visible(principal))
    for column, value in (
        (Project.status, filters.status),
        (Project.category, filters.category),
        (Project.device_class, filters.device_class),
        (Project.stage, filters.stage),
        (Project.maker_id, filters.maker_id),
    ):
        if value is not None:
            stmt = stmt.where(column == str(value))
    if filters.market is not None:
        stmt = stmt.where(
            json_array_contains_on(dialect, Project.target_markets, filters.market.value)
        )
    return stmt


def _check_excluded(session: Session, ids: Sequence[str]) -> None:
    if not ids:
        return
    found = set(
        session.exec(
            select(Organisation.id).where(
                Organisation.id.in_(ids),  # type: ignore[attr-defined]
                Organisation.kind == OrgKind.CDMO.value,
            )
        ).all()
    )
    for i, org_id in enumerate(ids):
        if org_id not in found:
            raise InvalidFieldError(
                f"excluded_cdmo_ids.{i}", f"{org_id} is not a CDMO", code="unknown_reference"
            )


def check_project_create(
    *, session: Session, principal: Principal, project_in: ProjectCreate
) -> str:
    """Check a new project in context (its maker, its excluded CDMOs); returns the maker id.
    Also used for draft bodies that are only quoted (instant candidates), never stored."""
    maker_id = owning_org(session, principal, project_in.maker_id, MAKER_OWNS_PROJECTS)
    _check_excluded(session, project_in.excluded_cdmo_ids)
    return maker_id


def _new_project(maker_id: str, project_in: ProjectCreate, project_id: str | None) -> Project:
    values = project_in.model_dump(mode="json", exclude={"maker_id"})
    return Project(id=project_id or new_id("prj"), maker_id=maker_id, **values)


def create_project(
    *,
    session: Session,
    principal: Principal,
    project_in: ProjectCreate,
    project_id: str | None = None,
) -> Project:
    maker_id = check_project_create(session=session, principal=principal, project_in=project_in)
    project = _new_project(maker_id, project_in, project_id)
    session.add(project)
    bump_market_version(session)
    return project


def create_at_once(
    *, principal: Principal, project_in: ProjectCreate
) -> tuple[Project, Callable[[ColumnElement[bool]], Select[Any]], dict[str, Any]]:
    """:func:`create_project` as one statement (service.transactions.Transaction.commit_at_once):
    the new project (not yet written, so that its answer can be recorded in the same
    statement), and a statement with its parameters that inserts it and bumps the market
    version, only where ``gate`` and :func:`check_project_create`'s checks hold (a maker named
    by an operator is a maker; every excluded id is a CDMO). No row: a check failed, and
    :func:`create_project` says which."""
    maker_id, named = requested_owner(principal, project_in.maker_id, MAKER_OWNS_PROJECTS)
    project = _new_project(maker_id, project_in, None)
    params = {f"new_{c.key}": getattr(project, c.key) for c in _COLUMNS}
    params["excluded"] = list(project_in.excluded_cdmo_ids)  # unique (UniqueList)
    return project, partial(_insert_statement, named), {**params, **market_bump_params()}


@cache
def _insert_statement(named: bool, gate: ColumnElement[bool]) -> Select[Any]:
    """Built once per shape (and gate, a long-lived clause); values are parameters."""
    maker = OrgKind.MAKER.value
    checks: list[ColumnElement[bool]] = [
        core_select(func.count())
        .where(
            col(Organisation.id) == any_(bindparam("excluded", type_=ARRAY(String))),
            col(Organisation.kind) == OrgKind.CDMO.value,
        )
        .scalar_subquery()
        == func.cardinality(bindparam("excluded", type_=ARRAY(String)))
    ]
    if named:
        maker_id = bindparam("new_maker_id", type_=_COLUMNS.maker_id.type)
        checks.append(
            exists().where(col(Organisation.id) == maker_id, col(Organisation.kind) == maker)
        )
    row = core_select(
        *(cast(bindparam(f"new_{c.key}", type_=c.type), c.type) for c in _COLUMNS)
    ).where(*checks, gate)
    inserted = (
        insert(Project.__table__)  # type: ignore[attr-defined]
        .from_select([c.key for c in _COLUMNS], row)
        .returning(_COLUMNS.id)
        .cte("inserted")
    )
    bumped = market_bump_cte(core_select(inserted.c.id).exists())
    return core_select(inserted.c.id).add_cte(bumped)


def _check_move(principal: Principal, current: ProjectStatus, target: ProjectStatus) -> None:
    if target == current or principal.is_operator:
        return
    if target not in _MAKER_MOVES[current]:
        raise InvalidStateError(
            f"a maker cannot move a project from {current.value} to {target.value}"
            + (
                "; proposed and matched are set by proposals"
                if target in (ProjectStatus.PROPOSED, ProjectStatus.MATCHED)
                else ""
            )
        )


def _lock_row(session: Session, project_id: str) -> None:
    """Lock the project before any listing (the order of service.flows.deals), without
    refreshing the object read for the If-Match check."""
    session.execute(select(Project.id).where(Project.id == project_id).with_for_update())


def _withdraw_active(session: Session, project_id: str) -> None:
    """Withdraw the proposed and accepted proposals (releasing what accepted ones hold);
    confirmed deals stay, holding their hours."""
    pending = session.exec(
        select(Proposal).where(
            Proposal.project_id == project_id,
            col(Proposal.status).in_(
                [ProposalStatus.PROPOSED.value, ProposalStatus.ACCEPTED.value]
            ),
        )
    ).all()
    now = utcnow()
    for proposal in pending:
        release_hold(session, proposal)
        proposal.status = ProposalStatus.WITHDRAWN.value
        proposal.updated_at = now
        session.add(proposal)


def update_project(
    *,
    session: Session,
    principal: Principal,
    project: Project,
    patch: ProjectUpdate,
    expected: frozenset[int],
) -> Project:
    if principal.is_cdmo:
        raise PermissionDeniedError("CDMOs may not change projects")
    check_version(project.version, expected, f"project {project.id}")
    changes = patch.model_dump(mode="json", exclude_unset=True)
    current_status = ProjectStatus(project.status)
    target = ProjectStatus(changes.pop("status", None) or current_status)
    _check_move(principal, current_status, target)
    if changes and current_status not in _EDITABLE and target not in _EDITABLE:
        raise InvalidStateError(
            f"a {current_status.value} project cannot be edited; reopen it first"
        )
    merged = merge_patch(ProjectFields, project, changes)
    if "excluded_cdmo_ids" in changes:
        _check_excluded(session, merged.excluded_cdmo_ids)
    if target in (ProjectStatus.CLOSED, ProjectStatus.DRAFT, ProjectStatus.OPEN) and (
        target != current_status
    ):
        _lock_row(session, project.id)
        _withdraw_active(session, project.id)  # leaving the proposal flow
    values = {**merged.model_dump(mode="json"), "status": target.value}
    versioned_update(session, Project, project, values, f"project {project.id}")
    bump_market_version(session)
    return project


def delete_project(*, session: Session, project: Project, expected: frozenset[int] | None) -> None:
    check_version(project.version, expected, f"project {project.id}")
    if ProjectStatus(project.status) not in _DELETABLE:
        raise InvalidStateError(f"a {project.status} project cannot be deleted; close it instead")
    _lock_row(session, project.id)
    for proposal in session.exec(select(Proposal).where(Proposal.project_id == project.id)):
        release_hold(session, proposal)  # a deleted project's deals hold nothing any more
    versioned_delete(session, Project, project, f"project {project.id}")
    bump_market_version(session)
