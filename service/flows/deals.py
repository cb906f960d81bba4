"""The proposal -> deal lifecycle, and the capacity a deal holds.

    proposed --accept (CDMO)--> accepted --confirm (maker)--> confirmed   (= a deal)
    proposed --decline (CDMO)--> declined
    proposed | accepted --withdraw (maker, operator)--> withdrawn
    proposed | accepted --(not acted on within deals.proposal_ttl_s)--> expired

Operators may make any party's move. Any other move is a 409 naming the current state and
the moves allowed from it; a move allowed from the state but not to the caller's role is 403.

Accepting holds capacity: the project's whole hours at the site for every process and window
month (``placement_hours``: the share of the role applied and rounded by the matcher's own
``whole_hours``) are added to the listings' ``reserved_hours`` (and ``held_hours``, the part
held by deals), after checking they fit in ``free_whole_hours(capacity, reserved)``; if any
does not, 409 with the shortfall per process and month and nothing changes. What was held is
recorded on the proposal and released exactly by decline/withdraw/expire; confirm keeps it.

Locks, always in this order (so concurrent moves and the run commit never deadlock): the
project, the proposal, the site's listings ordered by id, and the market version row last.
The listings are read ``FOR UPDATE``, so two acceptances at one site are serialised and the
second sees the first's hold.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlmodel import Session, col, select

from schemas.api import (
    HOLDING_PROPOSAL_STATUSES,
    HeldHours,
    ProposalStatus,
    Shortfall,
)
from schemas.market import Role
from service.auth import Principal
from service.db import Database, bump_market_version, mark_supply_changed
from service.errors import CapacityShortfallError, InvalidStateError, PermissionDeniedError
from service.flows.capacity import free_whole_hours, placement_hours
from service.models import Listing, Project, Proposal, utcnow
from service.notifications import outbox
from service.notifications.outbox import EventKind
from service.repositories.proposals import release_hold, sync_project_status

log = logging.getLogger(__name__)

CDMO, MAKER, OPERATOR, SYSTEM = "cdmo", "maker", "operator", "system"
P = ProposalStatus
# state -> target -> who may make the move (operators may make any party's move)
MOVES: dict[ProposalStatus, dict[ProposalStatus, frozenset[str]]] = {
    P.PROPOSED: {
        P.ACCEPTED: frozenset({CDMO, OPERATOR}),
        P.DECLINED: frozenset({CDMO, OPERATOR}),
        P.WITHDRAWN: frozenset({MAKER, OPERATOR}),
        P.EXPIRED: frozenset({SYSTEM}),
    },
    P.ACCEPTED: {
        P.CONFIRMED: frozenset({MAKER, OPERATOR}),
        P.WITHDRAWN: frozenset({MAKER, OPERATOR}),
        P.EXPIRED: frozenset({SYSTEM}),
    },
}
EVENT_OF = {
    P.ACCEPTED: EventKind.PROPOSAL_ACCEPTED,
    P.DECLINED: EventKind.PROPOSAL_DECLINED,
    P.CONFIRMED: EventKind.PROPOSAL_CONFIRMED,
    P.WITHDRAWN: EventKind.PROPOSAL_WITHDRAWN,
    P.EXPIRED: EventKind.PROPOSAL_EXPIRED,
}


def expires_at(proposal: Proposal, ttl_s: float) -> dt.datetime | None:
    """When a proposal not acted on expires (None once nothing is pending on it)."""
    if ProposalStatus(proposal.status) not in (P.PROPOSED, P.ACCEPTED):
        return None
    updated = proposal.updated_at
    if updated.tzinfo is None:
        updated = updated.replace(tzinfo=dt.UTC)
    return updated + dt.timedelta(seconds=ttl_s)


def allowed_moves(status: ProposalStatus, party: str) -> list[str]:
    return [t.value for t, who in MOVES.get(status, {}).items() if party in who]


def party_of(principal: Principal, proposal: Proposal, project: Project) -> str:
    """The caller's side of this proposal: 404-safe callers only (visibility already checked)."""
    if principal.is_operator:
        return OPERATOR
    if principal.is_cdmo and principal.org_id == proposal.cdmo_id:
        return CDMO
    if principal.is_maker and principal.org_id == project.maker_id:
        return MAKER
    raise PermissionDeniedError("this proposal is not to your site nor of your project")


def _check_move(current: ProposalStatus, target: ProposalStatus, party: str) -> None:
    from_here = MOVES.get(current, {})
    if target not in from_here:
        allowed = (
            allowed_moves(current, party)
            if party != OPERATOR
            else [t.value for t in from_here if t != P.EXPIRED]
        )
        raise InvalidStateError(
            f"the proposal is {current.value} and cannot become {target.value}; "
            f"allowed: {', '.join(allowed) or 'none (final state)'}",
            current_state=current.value,
            allowed_moves=allowed,
        )
    if party not in from_here[target] and not (party == OPERATOR and target != P.EXPIRED):
        raise PermissionDeniedError(
            f"a {party} may not make a proposal {target.value}",
            current_state=current.value,
            allowed_moves=allowed_moves(current, party),
        )


def _lock_listings(session: Session, site_id: str, ids: list[str] | None = None) -> list[Listing]:
    stmt = select(Listing).where(Listing.site_id == site_id)
    if ids is not None:
        stmt = stmt.where(col(Listing.id).in_(ids))
    return list(session.exec(stmt.order_by(col(Listing.id)).with_for_update()).all())


def _hold(session: Session, proposal: Proposal, project: Project) -> list[dict[str, Any]]:
    """Add the placement's hours to the listings, or raise the shortfall (changing nothing)."""
    need = placement_hours(project, proposal.site_id, Role(proposal.role))
    listings = {
        (lst.site_id, lst.process, lst.month): lst
        for lst in _lock_listings(session, proposal.site_id)
    }
    short: list[Shortfall] = []
    for key in sorted(need):
        lst = listings.get(key)
        free = free_whole_hours(lst.capacity_hours, lst.reserved_hours) if lst else 0
        if need[key] > free:
            short.append(
                Shortfall(
                    process=key[1],  # type: ignore[arg-type]
                    month=key[2],
                    needed_hours=need[key],
                    free_hours=free,
                    short_hours=need[key] - free,
                )
            )
    if short:
        total = sum(s.short_hours for s in short)
        raise CapacityShortfallError(
            f"site {proposal.site_id} is short of {total} h in {len(short)} process-month(s) "
            f"to hold this proposal (first: {short[0].process} {short[0].month}, "
            f"needs {short[0].needed_hours} h, {short[0].free_hours} h free)",
            shortfalls=[s.model_dump(mode="json") for s in short],
        )
    held = []
    now = utcnow()
    mark_supply_changed(session)  # free capacity moves: the candidates' site side too
    for key in sorted(need):
        lst = listings[key]
        lst.reserved_hours += need[key]
        lst.held_hours += need[key]
        lst.version += 1
        lst.updated_at = now
        session.add(lst)
        held.append(
            HeldHours(
                listing_id=lst.id,
                process=lst.process,  # type: ignore[arg-type]
                month=lst.month,
                hours=need[key],
            ).model_dump(mode="json")
        )
    return held


def event_data(proposal: Proposal, previous: ProposalStatus | None, actor: str) -> dict[str, Any]:
    return {
        "proposal_id": proposal.id,
        "project_id": proposal.project_id,
        "site_id": proposal.site_id,
        "cdmo_id": proposal.cdmo_id,
        "role": proposal.role,
        "status": proposal.status,
        "previous_status": previous.value if previous is not None else None,
        "actor": actor,
    }


def move(
    session: Session,
    *,
    proposal_id: str,
    target: ProposalStatus,
    principal: Principal | None,
    ttl_s: float | None = None,
) -> Proposal:
    """Make one lifecycle move (``principal`` None: the system's expiry). Locks, checks the
    move and the capacity, holds or releases, syncs the project's status, writes the parties'
    events and bumps the market version. Does not commit."""
    first = session.get(Proposal, proposal_id)
    if first is None:
        raise InvalidStateError(f"proposal {proposal_id} no longer exists")
    project = session.get(Project, first.project_id, with_for_update=True, populate_existing=True)
    assert project is not None  # foreign key
    proposal = session.get(Proposal, proposal_id, with_for_update=True, populate_existing=True)
    assert proposal is not None
    party = SYSTEM if principal is None else party_of(principal, proposal, project)
    current = ProposalStatus(proposal.status)
    _check_move(current, target, party)
    if target == P.EXPIRED:  # the sweep re-checks under the lock: acted on meanwhile?
        due = expires_at(proposal, ttl_s or 0)
        if due is None or due > utcnow():
            raise InvalidStateError(f"proposal {proposal_id} is not due to expire")
    if target == P.ACCEPTED:
        proposal.held = _hold(session, proposal, project)
    elif target not in HOLDING_PROPOSAL_STATUSES:
        release_hold(session, proposal)
    proposal.status = target.value
    proposal.updated_at = utcnow()
    session.add(proposal)
    sync_project_status(session, project)
    outbox.record(
        session,
        org_ids=[proposal.cdmo_id, project.maker_id],
        kind=EVENT_OF[target],
        data=event_data(proposal, current, party),
    )
    bump_market_version(session)
    return proposal


def expire_due(db: Database, *, ttl_s: float, limit: int = 500) -> int:
    """Expire proposed/accepted proposals not acted on for ``ttl_s`` (each in its own
    transaction, re-checked under the lock); returns how many expired."""
    cutoff = utcnow() - dt.timedelta(seconds=ttl_s)
    with db.session() as session:
        ids = session.exec(
            select(Proposal.id)
            .where(
                col(Proposal.status).in_([P.PROPOSED.value, P.ACCEPTED.value]),
                col(Proposal.updated_at) <= cutoff,
            )
            .order_by(col(Proposal.updated_at))
            .limit(limit)
        ).all()
    expired = 0
    for proposal_id in ids:
        with db.session() as session:
            try:
                move(
                    session, proposal_id=proposal_id, target=P.EXPIRED, principal=None, ttl_s=ttl_s
                )
                session.commit()
                expired += 1
            except InvalidStateError:  # acted on (or expired by another sweeper) meanwhile
                session.rollback()
    if expired:
        log.info("expired %d proposal(s)", expired)
    return expired
