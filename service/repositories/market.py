"""The market snapshot: every open project and every listing, at one market version, in the
format the matcher consumes (:class:`schemas.market.MarketSnapshot`)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from schemas.api import ACTIVE_PROPOSAL_STATUSES, ProjectStatus
from schemas.market import CapacityListing, MarketSnapshot, Role
from schemas.market import Project as MarketProject
from schemas.market import Proposal as MarketProposal
from schemas.market import Site as MarketSite
from service.db import Database, read_market_version
from service.models import Listing, Project, Proposal, Site

SNAPSHOT_STATUSES = (ProjectStatus.OPEN.value, ProjectStatus.PROPOSED.value)


def build_snapshot(*, session: Session, as_of: dt.date) -> MarketSnapshot:
    """Read everything in ``session``'s transaction: call it inside
    :meth:`Database.snapshot_session` so all reads see one state."""
    version = read_market_version(session)
    sites = session.exec(select(Site).order_by(Site.id)).all()  # type: ignore[arg-type]
    # Listings as plain rows: a market has ~100k of them, too many to build ORM objects for.
    listing_fields = list(CapacityListing.model_fields)
    listings = session.execute(
        sa_select(*(col(getattr(Listing, name)) for name in listing_fields)).order_by(
            col(Listing.site_id), col(Listing.process), col(Listing.month)
        )
    ).all()
    projects = session.exec(
        select(Project)
        .where(Project.status.in_(SNAPSHOT_STATUSES))  # type: ignore[attr-defined]
        .order_by(Project.id)  # type: ignore[arg-type]
    ).all()
    project_ids = {p.id for p in projects}
    proposals = session.exec(
        select(Proposal)
        .where(Proposal.status.in_([s.value for s in ACTIVE_PROPOSAL_STATUSES]))  # type: ignore[attr-defined]
        .order_by(Proposal.id)  # type: ignore[arg-type]
    ).all()
    by_project: dict[str, dict[Role, str]] = defaultdict(dict)
    for prop in proposals:
        if prop.project_id in project_ids:
            by_project[prop.project_id][Role(prop.role)] = prop.site_id
    previous = [
        MarketProposal(
            project_id=pid,
            site_id=roles[Role.PRIMARY],
            second_site_id=roles.get(Role.SECOND_SOURCE),
        )
        for pid, roles in sorted(by_project.items())
        if Role.PRIMARY in roles
    ]
    return MarketSnapshot(
        version=version,
        as_of=as_of,
        sites=[
            MarketSite.model_validate({name: getattr(s, name) for name in MarketSite.model_fields})
            for s in sites
        ],
        listings=[
            CapacityListing.model_validate(dict(zip(listing_fields, row, strict=True)))
            for row in listings
        ],
        projects=[
            MarketProject.model_validate(
                {name: getattr(p, name) for name in MarketProject.model_fields}
            )
            for p in projects
        ],
        previous=previous,
        pinned=[],
    )


def read_snapshot(*, db: Database, as_of: dt.date) -> MarketSnapshot:
    with db.snapshot_session() as session:
        return build_snapshot(session=session, as_of=as_of)


def market_version(*, session: Session) -> int:
    return read_market_version(session)
