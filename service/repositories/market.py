"""The market snapshot: every open project and every listing, at one market version, in the
format the matcher consumes (:class:`schemas.market.MarketSnapshot`)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from schemas.api import HOLDING_PROPOSAL_STATUSES, PairRuleKind, ProjectStatus, ProposalStatus
from schemas.market import CapacityListing, MarketSnapshot, PairRef, Role
from schemas.market import Project as MarketProject
from schemas.market import Proposal as MarketProposal
from schemas.market import Site as MarketSite
from service.db import Database, read_market_version
from service.models import Listing, PairRule, Project, Proposal, Site

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
    # A project holding capacity through an accepted proposal or a deal is out of the market:
    # its hours are already in reserved_hours, so it is neither placed again nor pinned.
    holding = select(Proposal.project_id).where(
        Proposal.status.in_([s.value for s in HOLDING_PROPOSAL_STATUSES])  # type: ignore[attr-defined]
    )
    projects = session.exec(
        select(Project)
        .where(
            Project.status.in_(SNAPSHOT_STATUSES),  # type: ignore[attr-defined]
            Project.id.not_in(holding),  # type: ignore[attr-defined]
        )
        .order_by(Project.id)  # type: ignore[arg-type]
    ).all()
    project_ids = {p.id for p in projects}
    site_ids = {s.id for s in sites}
    proposals = session.exec(
        select(Proposal)
        .where(
            Proposal.status.in_([ProposalStatus.PROPOSED.value, ProposalStatus.DECLINED.value])  # type: ignore[attr-defined]
        )
        .order_by(Proposal.id)  # type: ignore[arg-type]
    ).all()
    by_project: dict[str, dict[Role, str]] = defaultdict(dict)
    forbidden: set[tuple[str, str]] = set()
    for prop in proposals:
        if prop.project_id not in project_ids:
            continue
        if prop.status == ProposalStatus.DECLINED.value:  # never proposed again
            forbidden.add((prop.project_id, prop.site_id))
        else:  # live proposals: kept unless moving gains more than the stability weight
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
    pins: dict[str, str] = {}
    for rule in session.exec(select(PairRule).order_by(PairRule.id)):  # type: ignore[arg-type]
        if rule.project_id not in project_ids or rule.site_id not in site_ids:
            continue
        if rule.rule == PairRuleKind.FORBID.value:
            forbidden.add((rule.project_id, rule.site_id))
        else:
            pins[rule.project_id] = rule.site_id
    pinned = [MarketProposal(project_id=pid, site_id=sid) for pid, sid in sorted(pins.items())]
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
        pinned=pinned,
        forbidden=[PairRef(project_id=p, site_id=s) for p, s in sorted(forbidden)],
    )


def read_snapshot(*, db: Database, as_of: dt.date) -> MarketSnapshot:
    with db.snapshot_session() as session:
        return build_snapshot(session=session, as_of=as_of)


def market_version(*, session: Session) -> int:
    return read_market_version(session)


def build_supply(*, session: Session, as_of: dt.date) -> MarketSnapshot:
    """The supply side alone (sites and listings, no projects or proposals), at one market
    version: what instant candidates encode once per version. Call it inside
    :meth:`Database.snapshot_session`. Listings are read as plain rows and built without
    validation (they were validated when written): at 10000 sites there are ~500000."""
    version = read_market_version(session)
    sites = session.exec(select(Site).order_by(Site.id)).all()  # type: ignore[arg-type]
    columns = [getattr(Listing, name) for name in CapacityListing.model_fields]
    rows = session.execute(
        select(*columns).order_by(Listing.site_id, Listing.process, Listing.month)  # type: ignore[arg-type]
    ).all()
    names = list(CapacityListing.model_fields)
    listings = [
        CapacityListing.model_construct(**dict(zip(names, row, strict=True))) for row in rows
    ]
    return MarketSnapshot.model_construct(
        version=version,
        as_of=as_of,
        sites=[
            MarketSite.model_validate({name: getattr(s, name) for name in MarketSite.model_fields})
            for s in sites
        ],
        listings=listings,
        projects=[],
        previous=[],
        pinned=[],
    )
