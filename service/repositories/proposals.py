"""Proposals of projects to CDMO sites, and what they do to the project's status.

:func:`create_proposal` is the one way a proposal comes into being: the operator endpoint
calls it today, the optimiser's batches will call it later.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import update
from sqlmodel import Session, select

from schemas.api import (
    ACTIVE_PROPOSAL_STATUSES,
    HOLDING_PROPOSAL_STATUSES,
    HeldHours,
    ProjectStatus,
    ProposalPublic,
    ProposalStatus,
)
from schemas.market import Role
from service.auth import Principal
from service.db import bump_market_version, mark_supply_changed
from service.errors import ConflictError, InvalidStateError, NotFoundError
from service.ids import new_id
from service.models import Listing, Organisation, Project, Proposal, Site, utcnow
from service.notifications import outbox
from service.notifications.outbox import EventKind
from service.pagination import PageParams, paginate
from service.repositories.bulk import copy_rows
from service.repositories.common import where_visible

_ACTIVE = [s.value for s in ACTIVE_PROPOSAL_STATUSES]
_PROPOSABLE = frozenset({ProjectStatus.OPEN, ProjectStatus.PROPOSED})
_HOLDING = {s.value for s in HOLDING_PROPOSAL_STATUSES}
# The lifecycle's moves live in service.flows.deals (they hold and release capacity).


def release_hold(session: Session, proposal: Proposal) -> None:
    """Give back exactly the hours ``proposal`` holds in its site's listings (locked in id
    order; a listing deleted since is skipped). The caller has locked the project first."""
    held: list[dict[str, Any]] = proposal.held or []
    if not held:
        return
    amounts = {h["listing_id"]: float(h["hours"]) for h in held}
    mark_supply_changed(session)  # free capacity moves: the candidates' site side too
    now = utcnow()
    stmt = (
        select(Listing)
        .where(Listing.id.in_(sorted(amounts)))  # type: ignore[attr-defined]
        .order_by(Listing.id)  # type: ignore[arg-type]
        .with_for_update()
    )
    for lst in session.exec(stmt).all():
        hours = amounts[lst.id]
        lst.held_hours = max(0.0, lst.held_hours - hours)
        lst.reserved_hours = max(lst.held_hours, lst.reserved_hours - hours)
        lst.version += 1
        lst.updated_at = now
        session.add(lst)
    proposal.held = []
    session.add(proposal)


@dataclass(frozen=True)
class ProposalFilters:
    project_id: str | None = None
    site_id: str | None = None
    status: ProposalStatus | None = None


def _joined() -> Any:
    return (
        select(Proposal, Site, Organisation)
        .join(Site, Site.id == Proposal.site_id)  # type: ignore[arg-type]
        .join(Organisation, Organisation.id == Proposal.cdmo_id)  # type: ignore[arg-type]
    )


def _expires_at(proposal: Proposal, ttl_s: float | None) -> dt.datetime | None:
    if ttl_s is None or proposal.status not in (
        ProposalStatus.PROPOSED.value,
        ProposalStatus.ACCEPTED.value,
    ):
        return None
    updated = proposal.updated_at
    if updated.tzinfo is None:
        updated = updated.replace(tzinfo=dt.UTC)
    return updated + dt.timedelta(seconds=ttl_s)


def _public(
    proposal: Proposal, site: Site, cdmo: Organisation, ttl_s: float | None = None
) -> ProposalPublic:
    return ProposalPublic(
        id=proposal.id,
        project_id=proposal.project_id,
        site_id=proposal.site_id,
        cdmo_id=proposal.cdmo_id,
        role=Role(proposal.role),
        status=ProposalStatus(proposal.status),
        batch_id=proposal.batch_id,
        site_name=site.name,
        site_country=site.country,
        site_region=site.region,  # type: ignore[arg-type]
        cdmo_name=cdmo.name,
        held=[HeldHours.model_validate(h) for h in proposal.held or []],
        expires_at=_expires_at(proposal, ttl_s),
        created_at=proposal.created_at,
        updated_at=proposal.updated_at,
    )


def to_public(session: Session, proposal: Proposal, ttl_s: float | None = None) -> ProposalPublic:
    prop, site, cdmo = session.exec(_joined().where(Proposal.id == proposal.id)).one()
    return _public(prop, site, cdmo, ttl_s=ttl_s)


def _visible(principal: Principal) -> Any:
    if principal.is_operator:
        return None
    if principal.is_cdmo:
        return Proposal.cdmo_id == principal.org_id
    return Proposal.project_id.in_(  # type: ignore[attr-defined]
        select(Project.id).where(Project.maker_id == principal.org_id)
    )


def get_proposal(*, session: Session, principal: Principal, proposal_id: str) -> Proposal:
    stmt = select(Proposal).where(Proposal.id == proposal_id)
    proposal = session.exec(where_visible(stmt, _visible(principal))).first()
    if proposal is None:
        raise NotFoundError(f"proposal {proposal_id} not found")
    return proposal


def list_proposals(
    *,
    session: Session,
    principal: Principal,
    filters: ProposalFilters,
    page: PageParams,
    ttl_s: float | None = None,
) -> tuple[list[ProposalPublic], str | None]:
    stmt = where_visible(_joined(), _visible(principal))
    if filters.project_id is not None:
        stmt = stmt.where(Proposal.project_id == filters.project_id)
    if filters.site_id is not None:
        stmt = stmt.where(Proposal.site_id == filters.site_id)
    if filters.status is not None:
        stmt = stmt.where(Proposal.status == filters.status.value)
    rows, cursor = paginate(session, stmt, Proposal.id, page)
    return [_public(r[0], r[1], r[2], ttl_s=ttl_s) for r in rows], cursor


def _active(session: Session, project_id: str) -> Sequence[Proposal]:
    return session.exec(
        select(Proposal).where(
            Proposal.project_id == project_id,
            Proposal.status.in_(_ACTIVE),  # type: ignore[attr-defined]
        )
    ).all()


def sync_project_status(session: Session, project: Project) -> None:
    """open <-> proposed <-> matched, from the project's active proposals (matched: every
    source it needs is accepted or confirmed)."""
    if ProjectStatus(project.status) not in (
        ProjectStatus.OPEN,
        ProjectStatus.PROPOSED,
        ProjectStatus.MATCHED,
    ):
        return
    session.flush()
    active = _active(session, project.id)
    accepted = {Role(p.role) for p in active if p.status in _HOLDING}
    needed = {Role.PRIMARY} | ({Role.SECOND_SOURCE} if project.second_source_required else set())
    if needed <= accepted:
        status = ProjectStatus.MATCHED
    elif active:
        status = ProjectStatus.PROPOSED
    else:
        status = ProjectStatus.OPEN
    if status.value != project.status:
        project.status = status.value
        project.version += 1
        project.updated_at = utcnow()
        session.add(project)


def create_proposal(
    *,
    session: Session,
    project: Project,
    site: Site,
    role: Role,
    created_by: str,
    batch_id: str | None = None,
) -> tuple[Proposal, bool]:
    """Propose ``project`` to ``site`` in ``role``; returns (proposal, created).

    Re-proposing the active pair returns it unchanged (stable under repeated batches); a
    different site for the same role supersedes the previous proposal.
    """
    session.refresh(project, with_for_update=True)  # one proposal change per project at a time
    if ProjectStatus(project.status) not in _PROPOSABLE:
        raise InvalidStateError(f"project {project.id} is {project.status}, not open")
    if site.cdmo_id in project.excluded_cdmo_ids:
        raise ConflictError(f"the maker excluded CDMO {site.cdmo_id} from project {project.id}")
    if role == Role.SECOND_SOURCE and not project.second_source_required:
        raise InvalidStateError(f"project {project.id} does not ask for a second source")
    superseded = []
    for other in _active(session, project.id):
        if other.role == role.value:
            if other.site_id == site.id:
                return other, False
            if other.status in _HOLDING:  # never undo an acceptance or a deal
                raise InvalidStateError(
                    f"project {project.id} is already {other.status} at site {other.site_id} "
                    f"as {role.value}: withdraw that first",
                    current_state=other.status,
                )
            superseded.append(other)
        elif other.cdmo_id == site.cdmo_id:
            raise ConflictError("primary and second source must be different CDMOs")
    now = utcnow()
    if superseded:
        outbox.record_many(session, [_superseded(old, project.maker_id) for old in superseded])
    for old in superseded:
        old.status = ProposalStatus.SUPERSEDED.value
        old.updated_at = now
        session.add(old)
    proposal = Proposal(
        id=new_id("prp"),
        project_id=project.id,
        site_id=site.id,
        cdmo_id=site.cdmo_id,
        role=role.value,
        status=ProposalStatus.PROPOSED.value,
        batch_id=batch_id,
        created_by=created_by,
    )
    session.add(proposal)
    sync_project_status(session, project)
    _proposed_event(session, proposal, project.maker_id)
    bump_market_version(session)
    return proposal, True


def _proposed_event(session: Session, proposal: Proposal, maker_id: str) -> None:
    outbox.record_many(session, [_proposed(proposal.__dict__, maker_id)])


def _superseded(old: Proposal, maker_id: str) -> tuple[list[str], str, dict[str, Any]]:
    """The ``proposal.superseded`` event: another site was proposed for the same role."""
    data = {
        "proposal_id": old.id,
        "project_id": old.project_id,
        "site_id": old.site_id,
        "cdmo_id": old.cdmo_id,
        "role": old.role,
        "status": ProposalStatus.SUPERSEDED.value,
        "previous_status": old.status,
    }
    return [old.cdmo_id, maker_id], EventKind.PROPOSAL_SUPERSEDED, data


def _proposed(row: dict[str, Any], maker_id: str) -> tuple[list[str], str, dict[str, Any]]:
    """The ``proposal.proposed`` event of a new proposal, to its CDMO and the project's maker."""
    data = {
        "proposal_id": row["id"],
        "project_id": row["project_id"],
        "site_id": row["site_id"],
        "cdmo_id": row["cdmo_id"],
        "role": row["role"],
        "status": row["status"],
        "previous_status": None,
        "batch_id": row.get("batch_id"),
    }
    return [row["cdmo_id"], maker_id], EventKind.PROPOSAL_PROPOSED, data


class ProposableProject(Protocol):
    """What :func:`propose_batch` reads of a project (an ORM row or a plain row)."""

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def maker_id(self) -> str: ...
    @property
    def excluded_cdmo_ids(self) -> list[str]: ...
    @property
    def second_source_required(self) -> bool: ...


@dataclass(frozen=True)
class BatchPlacement:
    project: ProposableProject
    site: Site
    role: Role


@dataclass
class BatchOutcome:
    created: int = 0
    unchanged: int = 0
    superseded: int = 0
    refused: dict[tuple[str, str], str] | None = None  # (project id, role) -> why
    unchanged_keys: set[tuple[str, str]] = field(default_factory=set)  # (project id, role)


def propose_batch(
    *,
    session: Session,
    placements: Sequence[BatchPlacement],
    created_by: str,
    batch_id: str,
) -> BatchOutcome:
    """:func:`create_proposal` for many placements at once (an optimiser batch), with the same
    rules, in set-based statements: the projects must be locked (``FOR UPDATE``) by the
    caller; re-proposing the active pair leaves it unchanged; another site for the same role
    supersedes the earlier proposal; primary and second source stay at different CDMOs. Bumps
    the market version once. Does not commit."""
    outcome = BatchOutcome(refused={})
    assert outcome.refused is not None
    if not placements:
        return outcome
    project_ids = sorted({p.project.id for p in placements})
    active: dict[str, list[Proposal]] = {pid: [] for pid in project_ids}
    for chunk in _chunks(project_ids, 5000):
        for prop in session.exec(
            select(Proposal).where(
                Proposal.project_id.in_(chunk),  # type: ignore[attr-defined]
                Proposal.status.in_(_ACTIVE),  # type: ignore[attr-defined]
            )
        ):
            active[prop.project_id].append(prop)
    placed_cdmo = {(p.project.id, p.role.value): p.site.cdmo_id for p in placements}
    now = utcnow()
    new_rows: list[dict[str, Any]] = []
    superseded_ids: list[str] = []
    superseded_events: list[tuple[list[str], str, dict[str, Any]]] = []
    touched: dict[str, ProposableProject] = {}
    for item in placements:
        project, site, role = item.project, item.site, item.role
        key = (project.id, role.value)
        if ProjectStatus(project.status) not in _PROPOSABLE:
            outcome.refused[key] = f"project {project.id} is {project.status}, not open"
            continue
        if site.cdmo_id in project.excluded_cdmo_ids:
            outcome.refused[key] = f"the maker now excludes CDMO {site.cdmo_id}"
            continue
        if role == Role.SECOND_SOURCE and not project.second_source_required:
            outcome.refused[key] = "the project no longer asks for a second source"
            continue
        other_role = Role.PRIMARY if role == Role.SECOND_SOURCE else Role.SECOND_SOURCE
        other_cdmo = placed_cdmo.get((project.id, other_role.value))
        if other_cdmo is None:
            other_cdmo = next(
                (p.cdmo_id for p in active[project.id] if p.role == other_role.value), None
            )
        if other_cdmo == site.cdmo_id:
            outcome.refused[key] = "primary and second source must be different CDMOs"
            continue
        same_role = [p for p in active[project.id] if p.role == role.value]
        if any(p.site_id == site.id for p in same_role):
            outcome.unchanged += 1
            outcome.unchanged_keys.add(key)
            continue
        accepted = [p for p in same_role if p.status in _HOLDING]
        if accepted:  # a batch never undoes a CDMO's acceptance, nor a deal
            outcome.refused[key] = f"already accepted at site {accepted[0].site_id}"
            continue
        superseded_ids.extend(p.id for p in same_role)
        superseded_events.extend(_superseded(p, project.maker_id) for p in same_role)
        active[project.id] = [p for p in active[project.id] if p.role != role.value]
        new_rows.append(
            {
                "id": new_id("prp"),
                "project_id": project.id,
                "site_id": site.id,
                "cdmo_id": site.cdmo_id,
                "role": role.value,
                "status": ProposalStatus.PROPOSED.value,
                "batch_id": batch_id,
                "created_by": created_by,
                "created_at": now,
                "updated_at": now,
            }
        )
        touched[project.id] = project
    if superseded_ids:
        for chunk in _chunks(superseded_ids, 5000):
            session.execute(
                update(Proposal)
                .where(Proposal.id.in_(chunk))  # type: ignore[attr-defined]
                .values(status=ProposalStatus.SUPERSEDED.value, updated_at=now)
                .execution_options(synchronize_session=False)
            )
    if new_rows:
        copy_rows(session, Proposal, new_rows)
        makers = {p.project.id: p.project.maker_id for p in placements}
        outbox.record_many(session, [_proposed(r, makers[r["project_id"]]) for r in new_rows])
    if superseded_events:
        outbox.record_many(session, superseded_events)
    # A project that gets a new proposal is proposed (it has an active one and, the new one
    # not being accepted, cannot be fully matched); a superseded accepted proposal of a
    # matched project cannot happen here (matched projects are not proposable).
    to_proposed = [p.id for p in touched.values() if ProjectStatus(p.status) == ProjectStatus.OPEN]
    for chunk in _chunks(to_proposed, 5000):
        session.execute(
            update(Project)
            .where(Project.id.in_(chunk))  # type: ignore[attr-defined]
            .values(
                status=ProjectStatus.PROPOSED.value,
                version=Project.version + 1,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
    outcome.created = len(new_rows)
    outcome.superseded = len(superseded_ids)
    if new_rows or superseded_ids:
        bump_market_version(session)
    return outcome


def _chunks(values: Sequence[str], size: int) -> list[Sequence[str]]:
    return [values[i : i + size] for i in range(0, len(values), size)]
