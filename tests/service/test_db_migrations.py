"""Alembic migrations on SQLite and PostgreSQL: they build exactly the models' schema, and
go down and up again cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from service_testkit import BACKENDS, PgAdmin
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

from service.db import (
    Database,
    alembic_config,
    bump_market_version,
    current_revision,
    downgrade,
    read_market_version,
    upgrade,
)
from service.models import MARKET_STATE_STRIPES

TABLES = {
    "organisations",
    "api_keys",
    "sites",
    "listings",
    "projects",
    "proposals",
    "market_state",
    "idempotency_records",
}


@pytest.fixture(params=BACKENDS)
def fresh_db(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    if request.param == "embedded":
        url = f"sqlite:///{tmp_path / 'migrate.db'}"
    else:
        admin: PgAdmin = request.getfixturevalue("pg_admin")
        url = admin.create_database("mig")
    db = Database(url)
    yield db
    db.dispose()


def test_upgrade_builds_the_models_schema_and_downgrade_removes_it(fresh_db: Database) -> None:
    engine = fresh_db.engine
    assert current_revision(engine) is None
    upgrade(engine)
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert current_revision(engine) == head
    assert TABLES <= set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata
        )
        assert diff == [], diff
        stripes = conn.execute(text("SELECT id, version FROM market_state ORDER BY id")).all()
        assert stripes == [(i, 0) for i in range(1, MARKET_STATE_STRIPES + 1)]
    downgrade(engine, "base")
    assert current_revision(engine) is None
    assert not TABLES & set(inspect(engine).get_table_names())
    upgrade(engine)  # and back up again
    assert current_revision(engine) == head


def test_constraint_names_follow_the_convention(fresh_db: Database) -> None:
    upgrade(fresh_db.engine)
    insp = inspect(fresh_db.engine)
    uniques = {u["name"] for u in insp.get_unique_constraints("listings")}
    assert "uq_listings_site_id_process_month" in uniques
    fks = {f["name"] for f in insp.get_foreign_keys("listings")}
    assert fks == {"fk_listings_site_id_sites"}
    indexes = {i["name"] for i in insp.get_indexes("projects")}
    assert {"ix_projects_maker_id", "ix_projects_status"} <= indexes


def test_migration_files_are_dated() -> None:
    versions = Path(alembic_config().get_main_option("script_location") or "") / "versions"
    names = sorted(p.name for p in versions.glob("*.py"))
    assert names, "no migrations"
    for name in names:
        assert name[:8].isdigit() and name[8] == "_", name


def test_market_version_is_the_sum_of_its_stripes_and_survives_a_downgrade(
    fresh_db: Database,
) -> None:
    """Each market write bumps one random stripe: the version still grows by exactly one per
    committed write, and going back to one row keeps it."""
    upgrade(fresh_db.engine)
    for _ in range(40):
        with fresh_db.session() as session:
            bump_market_version(session)
            session.commit()
    with fresh_db.session() as session:
        bump_market_version(session)
        session.rollback()  # an uncommitted write never shows
    with fresh_db.session(write=False) as session:
        assert read_market_version(session) == 40
    with fresh_db.engine.connect() as conn:
        used = conn.execute(text("SELECT count(*) FROM market_state WHERE version > 0")).scalar()
    assert used > 1  # spread over stripes (40 draws over 32 stripes: one stripe is ~1e-59)
    downgrade(fresh_db.engine, "20261201_0005")
    with fresh_db.engine.connect() as conn:
        assert conn.execute(text("SELECT id, version FROM market_state")).all() == [(1, 40)]
    upgrade(fresh_db.engine)
    with fresh_db.session(write=False) as session:
        assert read_market_version(session) == 40
