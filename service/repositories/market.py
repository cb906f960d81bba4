"""The market snapshot: every open project and every listing, at one market version, in the
format the matcher consumes (:class:`schemas.market.MarketSnapshot`)."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict

from sqlalchemy import select as sa_select
from sqlalchemy import text
from sqlmodel import Session, col, select

from schemas.api import HOLDING_PROPOSAL_STATUSES, PairRuleKind, ProjectStatus, ProposalStatus
from schemas.market import CapacityListing, MarketSnapshot, PairRef, Role
from schemas.market import Project as MarketProject
from schemas.market import Proposal as MarketProposal
from schemas.market import Site as MarketSite
from service.db import Database, read_market_version
from service.models import Listing, PairRule, Project, Proposal, Site

SNAPSHOT_STATUSES = (ProjectStatus.OPEN.value, ProjectStatus.PROPOSED.value)


def _json_rows(session: Session, table: str, fields: list[str], order: str, where: str = "") -> str:
    """The rows of ``table`` as one JSON array (text), built by PostgreSQL: no Python object
    per row. Field names come from the wire models (trusted identifiers)."""
    columns = ", ".join(f'"{name}"' for name in fields)
    sql = (
        f"SELECT coalesce(json_agg(row_to_json(t) ORDER BY {order}), '[]')::text "
        f"FROM (SELECT {columns} FROM {table} {where}) t"
    )
    return str(session.execute(text(sql)).scalar_one())


def _build_snapshot_pg(session: Session, *, as_of: dt.date) -> MarketSnapshot:
    """:func:`build_snapshot` on PostgreSQL: sites, listings and projects come back as three
    JSON texts and the whole snapshot is validated once by pydantic-core from JSON (the
    same validation, an order of magnitude faster than an ORM object and a ``model_validate``
    per row at 20000 projects and 111k listings). Same result as the portable path (tested)."""
    version = read_market_version(session)
    statuses = ", ".join(f"'{s}'" for s in SNAPSHOT_STATUSES)
    holding = ", ".join(f"'{s.value}'" for s in HOLDING_PROPOSAL_STATUSES)
    open_projects = (
        f"WHERE status IN ({statuses}) AND id NOT IN "
        f"(SELECT project_id FROM proposals WHERE status IN ({holding}))"
    )
    sites = _json_rows(session, "sites", list(MarketSite.model_fields), "id")
    listings = _json_rows(
        session, "listings", list(CapacityListing.model_fields), "site_id, process, month"
    )
    projects = _json_rows(
        session, "projects", list(MarketProject.model_fields), "id", open_projects
    )
    project_ids = set(
        session.execute(text(f"SELECT id FROM projects {open_projects}")).scalars().all()
    )
    site_ids = set(session.execute(text("SELECT id FROM sites")).scalars().all())
    previous, pinned, forbidden = _decisions(session, project_ids, site_ids)
    tail = json.dumps(
        {
            "previous": [p.model_dump(mode="json") for p in previous],
            "pinned": [p.model_dump(mode="json") for p in pinned],
            "forbidden": [p.model_dump(mode="json") for p in forbidden],
        }
    )
    raw = (
        f'{{"version": {int(version)}, "as_of": "{as_of.isoformat()}", "sites": {sites}, '
        f'"listings": {listings}, "projects": {projects}, {tail[1:]}'
    )
    return MarketSnapshot.model_validate_json(raw)


def _decisions(
    session: Session, project_ids: set[str], site_ids: set[str]
) -> tuple[list[MarketProposal], list[MarketProposal], list[PairRef]]:
    """Live proposals (previous), pins and forbidden pairs of the projects in the snapshot."""
    proposals = session.execute(
        sa_select(
            col(Proposal.project_id),
            col(Proposal.site_id),
            col(Proposal.role),
            col(Proposal.status),
        )
        .where(
            col(Proposal.status).in_([ProposalStatus.PROPOSED.value, ProposalStatus.DECLINED.value])
        )
        .order_by(col(Proposal.id))
    ).all()
    by_project: dict[str, dict[Role, str]] = defaultdict(dict)
    forbidden: set[tuple[str, str]] = set()
    for project_id, site_id, role, status in proposals:
        if project_id not in project_ids:
            continue
        if status == ProposalStatus.DECLINED.value:  # never proposed again
            forbidden.add((project_id, site_id))
        else:  # live proposals: kept unless moving gains more than the stability weight
            by_project[project_id][Role(role)] = site_id
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
    return previous, pinned, [PairRef(project_id=p, site_id=s) for p, s in sorted(forbidden)]


def build_snapshot(*, session: Session, as_of: dt.date) -> MarketSnapshot:
    """Read everything in ``session``'s transaction: call it inside
    :meth:`Database.snapshot_session` so all reads see one state."""
    if session.get_bind().dialect.name == "postgresql":
        return _build_snapshot_pg(session, as_of=as_of)
    return build_snapshot_portable(session=session, as_of=as_of)


def build_snapshot_portable(*, session: Session, as_of: dt.date) -> MarketSnapshot:
    """:func:`build_snapshot` on any database, through ORM objects and ``model_validate``."""
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
    previous, pinned, forbidden = _decisions(session, project_ids, site_ids)
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
        forbidden=forbidden,
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
