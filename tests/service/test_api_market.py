"""The market snapshot: exactly schemas.market.MarketSnapshot, at one consistent version."""

from __future__ import annotations

import datetime as dt

from service_testkit import Api, ok
from sqlalchemy import update

from schemas.market import MarketSnapshot
from service import repositories as repo
from service.models import Listing


def _market(api: Api):  # type: ignore[no-untyped-def]
    maker, cdmo = api.maker(), api.cdmo()
    site = api.site(cdmo)
    listings = [api.listing(cdmo, site["id"], month=m) for m in ("2027-01", "2027-02")]
    open_p = api.project(maker, title="open")
    proposed = api.project(maker, title="proposed")
    draft = api.project(maker, title="draft", status="draft")
    closed = api.project(maker, title="closed")
    ok(
        maker.patch(
            f"/v1/projects/{closed['id']}", json={"status": "closed"}, headers={"If-Match": '"1"'}
        )
    )
    proposal = api.propose(proposed["id"], site["id"])
    return maker, cdmo, site, listings, open_p, proposed, draft, closed, proposal


def test_snapshot_holds_open_and_proposed_projects_all_listings_and_proposals(api: Api) -> None:
    maker, cdmo, site, listings, open_p, proposed, draft, closed, _prop = _market(api)
    response = api.operator.get("/v1/market/snapshot?as_of=2026-12-01")
    snap = MarketSnapshot.model_validate(ok(response))
    assert snap.as_of == dt.date(2026, 12, 1)
    assert snap.version == api.market_version()
    assert response.headers["etag"] == f'"{snap.version}"'
    assert {p.id for p in snap.projects} == {open_p["id"], proposed["id"]}
    assert [s.id for s in snap.sites] == [site["id"]]
    assert snap.sites[0].cdmo_id == cdmo.id
    assert {(x.site_id, x.month, x.free_hours) for x in snap.listings} == {
        (site["id"], "2027-01", 450.0),
        (site["id"], "2027-02", 450.0),
    }
    assert [(p.project_id, p.site_id) for p in snap.previous] == [(proposed["id"], site["id"])]
    assert snap.pinned == []
    project = next(p for p in snap.projects if p.id == open_p["id"])
    assert project.maker_id == maker.id and project.window_months == 3
    assert project.budget_ceiling == 250000


def test_every_market_write_moves_the_version(api: Api) -> None:
    versions = [api.market_version()]
    maker, cdmo = api.maker(), api.cdmo()
    versions.append(api.market_version())
    site = api.site(cdmo)
    versions.append(api.market_version())
    listing = api.listing(cdmo, site["id"])
    versions.append(api.market_version())
    project = api.project(maker)
    versions.append(api.market_version())
    api.propose(project["id"], site["id"])
    versions.append(api.market_version())
    ok(
        cdmo.patch(
            f"/v1/listings/{listing['id']}",
            json={"capacity_hours": 800},
            headers={"If-Match": '"1"'},
        )
    )
    versions.append(api.market_version())
    assert versions[0] == versions[1]  # organisations are not market data
    assert versions[1:] == sorted(set(versions[1:])), versions


def test_a_snapshot_transaction_does_not_see_later_writes(api: Api) -> None:
    """A write committed while a snapshot is being read is not seen by it: the version and
    every row come from the same moment (REPEATABLE READ / one SQLite read transaction)."""
    _maker, cdmo, site, listings, *_ = _market(api)
    db = api.backend.db
    with db.snapshot_session() as snap_session:
        version_before = repo.market.market_version(session=snap_session)
        # a CDMO updates capacity and commits, mid-snapshot
        ok(
            cdmo.patch(
                f"/v1/listings/{listings[0]['id']}",
                json={"capacity_hours": 999},
                headers={"If-Match": '"1"'},
            )
        )
        with db.session() as writer:
            writer.execute(update(Listing).values(price_per_hour=1.0))
            writer.commit()
        snap = repo.market.build_snapshot(session=snap_session, as_of=dt.date(2026, 12, 1))
    assert snap.version == version_before
    assert all(x.capacity_hours == 500 and x.price_per_hour == 80 for x in snap.listings)
    fresh = MarketSnapshot.model_validate(ok(api.operator.get("/v1/market/snapshot")))
    assert fresh.version == version_before + 1  # the API write bumped it, the raw one did not
    assert {x.capacity_hours for x in fresh.listings} == {999.0, 500.0}
    assert {x.price_per_hour for x in fresh.listings} == {1.0}


def test_empty_market_snapshot_is_valid(api: Api) -> None:
    snap = MarketSnapshot.model_validate(ok(api.operator.get("/v1/market/snapshot")))
    assert snap.version == 0 and snap.projects == [] and snap.listings == []
    assert snap.as_of == dt.datetime.now(dt.UTC).date()
