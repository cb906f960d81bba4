"""Invariants verified against the database (``cdmo check``), after load and fault tests and
whenever an operator doubts the data.

Each check is a function ``(session) -> iterable of violations`` registered in :data:`CHECKS`
with :func:`check`; a new invariant is one more decorated function. All checks read in one
REPEATABLE READ snapshot, so they judge one consistent state.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlmodel import Session, col

from schemas.api import (
    ACTIVE_PROPOSAL_STATUSES,
    HOLDING_PROPOSAL_STATUSES,
    ProjectStatus,
    ProposalStatus,
)
from schemas.market import Role
from service.config import get_settings
from service.db import Database
from service.models import IdempotencyRecord, Listing, Project, Proposal
from service.repositories.runs import check_runs

CheckFn = Callable[[Session], Iterable[str]]


@dataclass(frozen=True)
class Check:
    name: str
    description: str
    run: CheckFn


CHECKS: list[Check] = []


def check(name: str, description: str) -> Callable[[CheckFn], CheckFn]:
    """Register an invariant: the function yields one line per violation."""

    def register(fn: CheckFn) -> CheckFn:
        CHECKS.append(Check(name, description, fn))
        return fn

    return register


@dataclass(frozen=True)
class Outcome:
    check: Check
    violations: list[str]

    @property
    def ok(self) -> bool:
        return not self.violations


def run_checks(db: Database, checks: Iterable[Check] | None = None) -> list[Outcome]:
    with db.snapshot_session() as session:
        return [Outcome(c, list(c.run(session))) for c in (checks or CHECKS)]


# --- the invariants ------------------------------------------------------------------------


@check("capacity", "no site x process x month is reserved beyond its capacity")
def _capacity(session: Session) -> Iterator[str]:
    rows = session.execute(
        select(col(Listing.id), col(Listing.site_id), col(Listing.process), col(Listing.month))
        .where(
            (col(Listing.reserved_hours) > col(Listing.capacity_hours))
            | (col(Listing.reserved_hours) < 0)
        )
        .order_by(col(Listing.id))
    ).all()
    for listing_id, site_id, process, month in rows:
        yield f"listing {listing_id} ({site_id} {process} {month}) reserves beyond capacity"
    dupes = session.execute(
        select(col(Listing.site_id), col(Listing.process), col(Listing.month), func.count())
        .group_by(col(Listing.site_id), col(Listing.process), col(Listing.month))
        .having(func.count() > 1)
    ).all()
    for site_id, process, month, n in dupes:
        yield f"{site_id} {process} {month} is listed {n} times"


@check("idempotency", "no duplicate resource from an idempotent retry")
def _idempotency(session: Session) -> Iterator[str]:
    """A committed record is always complete (claim and response commit together), and each
    resource was answered to at most one key: two keys naming one resource, or a half-written
    record, would mean a retry was not matched to its first request."""
    rows = session.execute(
        select(
            col(IdempotencyRecord.key),
            col(IdempotencyRecord.status),
            col(IdempotencyRecord.headers),
        )
    ).all()
    by_location: dict[str, list[str]] = defaultdict(list)
    for key, status, headers in rows:
        if not 200 <= status < 300:
            yield f"idempotency record {key[:12]}... committed with status {status}"
        location = (headers or {}).get("Location")
        if location:
            by_location[location].append(key)
    for location, keys in sorted(by_location.items()):
        if len(keys) > 1:
            yield f"{location} was created for {len(keys)} idempotency keys"


_HOLDING = {s.value for s in HOLDING_PROPOSAL_STATUSES}


@check("holds", "each listing's held hours are exactly what accepted deals hold, within reserved")
def _holds(session: Session) -> Iterator[str]:
    held: dict[str, float] = defaultdict(float)
    for proposal in session.execute(
        select(Proposal).where(col(Proposal.status).in_(sorted(_HOLDING)))
    ).scalars():
        for h in proposal.held or []:
            held[h["listing_id"]] += float(h["hours"])
    for lst in session.execute(select(Listing).order_by(col(Listing.id))).scalars():
        if abs(lst.held_hours - held.get(lst.id, 0.0)) > 1e-6:
            yield (
                f"listing {lst.id} records {lst.held_hours:g} h held, its deals hold "
                f"{held.get(lst.id, 0.0):g} h"
            )
        if lst.held_hours > lst.reserved_hours + 1e-6:
            yield f"listing {lst.id} holds more than it reserves"


@check("proposals", "project statuses agree with their active proposals")
def _proposals(session: Session) -> Iterator[str]:
    active_values = [s.value for s in ACTIVE_PROPOSAL_STATUSES]
    active: dict[str, list[Proposal]] = defaultdict(list)
    for proposal in session.execute(
        select(Proposal).where(col(Proposal.status).in_(active_values))
    ).scalars():
        active[proposal.project_id].append(proposal)
    for project in session.execute(select(Project).order_by(col(Project.id))).scalars():
        mine = active.get(project.id, [])
        status = ProjectStatus(project.status)
        roles = [p.role for p in mine]
        if len(roles) != len(set(roles)):
            yield f"project {project.id} has two active proposals for one role"
        pending = [p for p in mine if p.status != ProposalStatus.CONFIRMED.value]
        if status in (ProjectStatus.DRAFT, ProjectStatus.CLOSED) and pending:
            # (a confirmed deal outlives its project's closing: it keeps its hours)
            yield f"project {project.id} is {status.value} but has active proposals"
            continue
        if status not in (ProjectStatus.OPEN, ProjectStatus.PROPOSED, ProjectStatus.MATCHED):
            continue
        accepted = {Role(p.role) for p in mine if p.status in _HOLDING}
        needed = {Role.PRIMARY} | (
            {Role.SECOND_SOURCE} if project.second_source_required else set()
        )
        expected = (
            ProjectStatus.MATCHED
            if needed <= accepted
            else ProjectStatus.PROPOSED
            if mine
            else ProjectStatus.OPEN
        )
        if status != expected:
            yield (
                f"project {project.id} is {status.value}, but its active proposals "
                f"make it {expected.value}"
            )


@check("runs", "every match run is final, or live with a recent worker heartbeat")
def _runs(session: Session) -> Iterable[str]:
    # The reaper's own timeout (CDMO_RUNS__HEARTBEAT_TIMEOUT_S): a run silent for longer is one
    # the reaper should already have re-queued or failed.
    timeout = get_settings().runs.heartbeat_timeout_s
    return check_runs(session, heartbeat_timeout_s=timeout)
