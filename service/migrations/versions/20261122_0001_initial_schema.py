"""Initial schema: organisations, API keys, sites, listings, projects, proposals, market state.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
TS = sa.DateTime(timezone=True)


def _id() -> sa.Column:
    return sa.Column("id", sa.String(64), nullable=False)


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "market_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_market_state")),
    )
    op.bulk_insert(
        sa.table("market_state", sa.column("id", sa.Integer), sa.column("version", sa.BigInteger)),
        [{"id": 1, "version": 0}],
    )

    op.create_table(
        "organisations",
        _id(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("country", sa.String(2), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organisations")),
        sa.UniqueConstraint("name", name=op.f("uq_organisations_name")),
    )
    op.create_index(op.f("ix_organisations_kind"), "organisations", ["kind"])

    op.create_table(
        "api_keys",
        _id(),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organisations.id"],
            name=op.f("fk_api_keys_org_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index(op.f("ix_api_keys_org_id"), "api_keys", ["org_id"])

    op.create_table(
        "projects",
        _id(),
        sa.Column("maker_id", sa.String(64), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("device_class", sa.String(4), nullable=False),
        sa.Column("target_markets", JSON, nullable=False),
        sa.Column("required_certifications", JSON, nullable=False),
        sa.Column("window_start", sa.String(7), nullable=False),
        sa.Column("window_end", sa.String(7), nullable=False),
        sa.Column("loads", JSON, nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("budget_ceiling", sa.Float(), nullable=True),
        sa.Column("excluded_cdmo_ids", JSON, nullable=False),
        sa.Column("second_source_required", sa.Boolean(), nullable=False),
        sa.Column("second_source_share", sa.Float(), nullable=False),
        sa.Column("confidential", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        *_timestamps(),
        sa.CheckConstraint("priority BETWEEN 1 AND 10", name=op.f("ck_projects_priority_range")),
        sa.CheckConstraint("window_end >= window_start", name=op.f("ck_projects_window_ordered")),
        sa.ForeignKeyConstraint(
            ["maker_id"],
            ["organisations.id"],
            name=op.f("fk_projects_maker_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
    )
    op.create_index(op.f("ix_projects_category"), "projects", ["category"])
    op.create_index(op.f("ix_projects_maker_id"), "projects", ["maker_id"])
    op.create_index(op.f("ix_projects_status"), "projects", ["status"])

    op.create_table(
        "sites",
        _id(),
        sa.Column("cdmo_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("country", sa.String(2), nullable=False),
        sa.Column("region", sa.String(8), nullable=False),
        sa.Column("overseas", sa.Boolean(), nullable=False),
        sa.Column("certifications", JSON, nullable=False),
        sa.Column("processes", JSON, nullable=False),
        sa.Column("categories", JSON, nullable=False),
        sa.Column("device_classes", JSON, nullable=False),
        sa.Column("quality", JSON, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        *_timestamps(),
        sa.ForeignKeyConstraint(
            ["cdmo_id"],
            ["organisations.id"],
            name=op.f("fk_sites_cdmo_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sites")),
    )
    op.create_index(op.f("ix_sites_cdmo_id"), "sites", ["cdmo_id"])
    op.create_index(op.f("ix_sites_region"), "sites", ["region"])

    op.create_table(
        "listings",
        _id(),
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("process", sa.String(32), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("capacity_hours", sa.Float(), nullable=False),
        sa.Column("reserved_hours", sa.Float(), nullable=False),
        sa.Column("price_per_hour", sa.Float(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        *_timestamps(),
        sa.CheckConstraint("capacity_hours >= 0", name=op.f("ck_listings_capacity_nonnegative")),
        sa.CheckConstraint("price_per_hour >= 0", name=op.f("ck_listings_price_nonnegative")),
        sa.CheckConstraint(
            "reserved_hours >= 0 AND reserved_hours <= capacity_hours",
            name=op.f("ck_listings_reserved_in_range"),
        ),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_listings_site_id_sites"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_listings")),
        sa.UniqueConstraint(
            "site_id", "process", "month", name=op.f("uq_listings_site_id_process_month")
        ),
    )
    op.create_index(op.f("ix_listings_month"), "listings", ["month"])

    op.create_table(
        "proposals",
        _id(),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("cdmo_id", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("batch_id", sa.String(64), nullable=True),
        sa.Column("created_by", sa.String(64), nullable=False),
        *_timestamps(),
        sa.ForeignKeyConstraint(
            ["cdmo_id"],
            ["organisations.id"],
            name=op.f("fk_proposals_cdmo_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_proposals_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_proposals_site_id_sites"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_proposals")),
    )
    op.create_index(op.f("ix_proposals_cdmo_id"), "proposals", ["cdmo_id"])
    op.create_index(op.f("ix_proposals_project_id"), "proposals", ["project_id"])
    op.create_index(op.f("ix_proposals_site_id"), "proposals", ["site_id"])
    op.create_index(op.f("ix_proposals_status"), "proposals", ["status"])


def downgrade() -> None:
    for table in ("proposals", "listings", "sites", "projects", "api_keys", "organisations"):
        op.drop_table(table)  # indexes go with their table
    op.drop_table("market_state")
