"""The snapshot a run solves: the market at one version, restricted to the run's scope.

Capacity held by proposals the run will not touch (those of open projects outside its scope)
is subtracted from the listings (as reserved hours), so the answer fits next to them and the
commit's re-check does not throw it away. Accepted deals are already in ``reserved_hours``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, NamedTuple

from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from schemas.api import ProposalStatus, RunScope
from schemas.market import MarketSnapshot, Role
from service import repositories as repo
from service.db import Database
from service.flows.capacity import ListingKey, add_hours, empty_hours, placement_hours
from service.models import Project, Proposal
from service.repositories.runs import in_scope


def held_by_proposals(session: Session, *, exclude: set[tuple[str, str]]) -> dict[ListingKey, int]:
    """Whole hours held by active ``proposed`` proposals, except those of (project, role)
    pairs in ``exclude`` (the ones the caller is about to re-decide). Plain rows: a market
    can hold ~20k live proposals."""
    rows = session.execute(
        sa_select(
            col(Proposal.project_id),
            col(Proposal.role),
            col(Proposal.site_id),
            col(Project.second_source_required),
            col(Project.second_source_share),
            col(Project.window_start),
            col(Project.loads),
        )
        .join(Project, col(Project.id) == col(Proposal.project_id))
        .where(col(Proposal.status) == ProposalStatus.PROPOSED.value)
    ).all()
    held = empty_hours()
    add_hours(
        held,
        (
            placement_hours(_Needs(*row[3:]), row[2], Role(row[1]))
            for row in rows
            if (row[0], row[1]) not in exclude
        ),
    )
    return held


class _Needs(NamedTuple):
    """The columns of a project that :func:`placement_hours` reads."""

    second_source_required: bool
    second_source_share: float
    window_start: str
    loads: list[dict[str, Any]]


def run_snapshot(db: Database, *, as_of: dt.date, scope: RunScope) -> MarketSnapshot:
    with db.snapshot_session() as session:
        full = repo.market.build_snapshot(session=session, as_of=as_of)
        everything = not (scope.project_ids or scope.categories or scope.markets)
        if everything:
            keep = full.projects
        else:
            keep = [p for p in full.projects if in_scope(p, scope)]
        kept = {p.id for p in keep}
        exclude = {(pid, role.value) for pid in kept for role in Role}
        held = held_by_proposals(session, exclude=exclude)
    if not held and everything:
        return full
    listings = [
        lst.model_copy(
            update={
                "reserved_hours": min(
                    lst.capacity_hours,
                    lst.reserved_hours + held.get((lst.site_id, str(lst.process), lst.month), 0),
                )
            }
        )
        if (lst.site_id, str(lst.process), lst.month) in held
        else lst
        for lst in full.listings
    ]
    return full.model_copy(
        update={
            "projects": keep,
            "listings": listings,
            "previous": [p for p in full.previous if p.project_id in kept],
            "pinned": [p for p in full.pinned if p.project_id in kept],
            "forbidden": [p for p in full.forbidden if p.project_id in kept],
        }
    )
