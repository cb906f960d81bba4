"""The PostgreSQL paths of match runs: the snapshot read as JSON built by the server (one
pydantic-core validation) equals the portable ORM path on a market with live, declined and
accepted proposals and pair rules; ``bulk.copy_rows`` (COPY) writes what an INSERT writes,
column defaults included."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from runs_testkit import load_generated
from service_testkit import PgAdmin
from sqlalchemy import text
from sqlmodel import col, select

from schemas.market import MarketSnapshot
from service import repositories as repo
from service.db import Database, upgrade
from service.models import PairRule, Project, Proposal, Site

AS_OF = dt.date(2026, 12, 1)


@pytest.fixture(scope="module")
def pg(pg_admin: PgAdmin, worker_id: str) -> Iterator[Database]:
    db = Database(pg_admin.create_database(f"runsnap{worker_id}"))
    upgrade(db.engine)
    load_generated(db, projects=40, sites=10, capacity_scale=1.0)
    yield db
    db.engine.dispose()


def _proposal(n: int, project: Project, site: Site, role: str, status: str) -> dict[str, Any]:
    return {
        "id": f"prp_t{n}",
        "project_id": project.id,
        "site_id": site.id,
        "cdmo_id": site.cdmo_id,
        "role": role,
        "status": status,
        "created_by": "org_op",
    }


def _snapshots(db: Database) -> tuple[MarketSnapshot, MarketSnapshot]:
    assert db.dialect == "postgresql"
    with db.snapshot_session() as session:
        fast = repo.market.build_snapshot(session=session, as_of=AS_OF)
        portable = repo.market.build_snapshot_portable(session=session, as_of=AS_OF)
    return fast, portable


def test_the_json_snapshot_equals_the_portable_one(pg: Database) -> None:
    with pg.session() as session:
        projects = list(session.exec(select(Project).order_by(col(Project.id))))
        sites = list(session.exec(select(Site).order_by(col(Site.id))))
        rows = [
            _proposal(1, projects[0], sites[0], "primary", "proposed"),
            _proposal(2, projects[1], sites[1], "primary", "declined"),
            _proposal(3, projects[2], sites[2], "primary", "accepted"),  # holds: out of market
        ]
        assert repo.bulk.copy_rows(session, Proposal, rows) == 3
        session.add(
            PairRule(
                id="pr_1",
                project_id=projects[3].id,
                site_id=sites[3].id,
                rule="forbid",
                created_by="org_op",
            )
        )
        session.add(
            PairRule(
                id="pr_2",
                project_id=projects[4].id,
                site_id=sites[4].id,
                rule="pin",
                created_by="org_op",
            )
        )
        session.commit()
    fast, portable = _snapshots(pg)
    assert fast == portable
    assert fast.model_dump_json() == portable.model_dump_json()
    ids = {p.id for p in fast.projects}
    assert projects[2].id not in ids and projects[0].id in ids
    assert [p.project_id for p in fast.previous] == [projects[0].id]
    assert {(f.project_id, f.site_id) for f in fast.forbidden} == {
        (projects[1].id, sites[1].id),
        (projects[3].id, sites[3].id),
    }
    assert [(p.project_id, p.site_id) for p in fast.pinned] == [(projects[4].id, sites[4].id)]
    assert len(fast.listings) > 100 and len(fast.sites) == 10


def test_copy_rows_writes_what_insert_writes_with_defaults(pg: Database) -> None:
    with pg.session() as session:
        project = session.exec(select(Project).order_by(col(Project.id))).first()
        site = session.exec(select(Site).order_by(col(Site.id))).first()
        assert project is not None and site is not None
        via_copy = _proposal(10, project, site, "second_source", "superseded")
        via_insert = _proposal(11, project, site, "second_source", "superseded")
        repo.bulk.copy_rows(session, Proposal, [via_copy])
        repo.bulk._insert(session, Proposal, [via_insert])
        got = {
            r.id: r
            for r in session.execute(
                text(
                    "SELECT id, project_id, site_id, role, status, batch_id, held, "
                    "created_at IS NOT NULL AS dated FROM proposals WHERE id IN "
                    "('prp_t10', 'prp_t11')"
                )
            )
        }
        session.rollback()
    a, b = got["prp_t10"], got["prp_t11"]
    assert tuple(a)[1:] == tuple(b)[1:]
    assert a.held == [] and a.batch_id is None and a.dated
