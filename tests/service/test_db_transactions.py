"""Transactions commit whole or not at all, against real database constraints."""

from __future__ import annotations

import pytest
from service_testkit import Api, ok
from sqlalchemy.exc import IntegrityError

from schemas.market import Role
from service import repositories as repo
from service.models import Site


def test_a_failing_proposal_write_leaves_everything_as_it_was(api: Api) -> None:
    """create_proposal supersedes the old proposal, inserts the new one, moves the project's
    status and bumps the market version in one transaction. Make the insert fail at the
    database (a site whose CDMO does not exist breaks a foreign key): nothing may remain."""
    maker, cdmo = api.maker(), api.cdmo()
    site = api.site(cdmo)
    project = api.project(maker)
    first = api.propose(project["id"], site["id"])
    version = api.market_version()
    db = api.backend.db
    with db.session() as session:
        project_row = repo.projects.get_project(
            session=session, principal=_op(api), project_id=project["id"]
        )
        ghost = Site(
            id="site_ghost", cdmo_id="org_missing", name="ghost", country="CN", region="CN"
        )
        with pytest.raises(IntegrityError):
            repo.proposals.create_proposal(
                session=session,
                project=project_row,
                site=ghost,
                role=Role.PRIMARY,
                created_by="test",
            )
        session.rollback()
    assert ok(api.operator.get(f"/v1/proposals/{first['id']}"))["status"] == "proposed"
    assert len(ok(api.operator.get("/v1/proposals"))["items"]) == 1
    assert ok(maker.get(f"/v1/projects/{project['id']}"))["version"] == 2
    assert api.market_version() == version


def test_a_rejected_request_does_not_leave_a_half_written_listing(api: Api) -> None:
    cdmo = api.cdmo()
    site = api.site(cdmo)
    listing = api.listing(cdmo, site["id"])
    version = api.market_version()
    # the check constraint reserved <= capacity is the database's last line of defence
    db = api.backend.db
    with db.session() as session:
        row, _ = repo.listings.get_listing(
            session=session, principal=_op(api), listing_id=listing["id"]
        )
        with pytest.raises(IntegrityError):
            repo.common.versioned_update(
                session, type(row), row, {"reserved_hours": 10_000.0}, "listing"
            )
        session.rollback()
    assert ok(cdmo.get(f"/v1/listings/{listing['id']}")) == listing
    assert api.market_version() == version


def _op(api: Api):  # type: ignore[no-untyped-def]
    from schemas.api import OrgKind
    from service.auth import Principal

    return Principal(org_id=api.operator.id, kind=OrgKind.OPERATOR, key_id="test")
