"""Deals and notifications: capacity held by proposals, pair rules, webhooks, events.

Revision ID: 20261201_0004
Revises: 20261201_0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "20261201_0004"
down_revision: str | None = "20261201_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("organisations") as batch:
        batch.add_column(sa.Column("webhook_url", sa.String(2000), nullable=True))
        batch.add_column(sa.Column("webhook_secret", sa.String(100), nullable=True))
    with op.batch_alter_table("listings") as batch:
        batch.add_column(sa.Column("held_hours", sa.Float(), nullable=False, server_default="0"))
        batch.create_check_constraint(
            op.f("ck_listings_held_in_reserved"),
            "held_hours >= 0 AND held_hours <= reserved_hours",
        )
    with op.batch_alter_table("listings") as batch:
        batch.alter_column("held_hours", server_default=None)
    with op.batch_alter_table("proposals") as batch:
        batch.add_column(sa.Column("held", JSON, nullable=False, server_default="[]"))
    with op.batch_alter_table("proposals") as batch:
        batch.alter_column("held", server_default=None)
    op.create_table(
        "pair_rules",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("rule", sa.String(8), nullable=False),
        sa.Column("note", sa.String(500), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_pair_rules_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_pair_rules_site_id_sites"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pair_rules")),
        sa.UniqueConstraint("project_id", "site_id", name=op.f("uq_pair_rules_project_id_site_id")),
    )
    op.create_index(op.f("ix_pair_rules_project_id"), "pair_rules", ["project_id"])
    op.create_table(
        "org_events",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TS, nullable=True),
        sa.Column("delivered_at", TS, nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organisations.id"],
            name=op.f("fk_org_events_org_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_org_events")),
    )
    op.create_index(op.f("ix_org_events_org_id"), "org_events", ["org_id"])
    op.create_index(op.f("ix_org_events_status"), "org_events", ["status"])
    op.create_index(op.f("ix_org_events_next_attempt_at"), "org_events", ["next_attempt_at"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(500), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["org_events.id"],
            name=op.f("fk_webhook_deliveries_event_id_org_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index(op.f("ix_webhook_deliveries_event_id"), "webhook_deliveries", ["event_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_webhook_deliveries_event_id"), table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index(op.f("ix_org_events_next_attempt_at"), table_name="org_events")
    op.drop_index(op.f("ix_org_events_status"), table_name="org_events")
    op.drop_index(op.f("ix_org_events_org_id"), table_name="org_events")
    op.drop_table("org_events")
    op.drop_index(op.f("ix_pair_rules_project_id"), table_name="pair_rules")
    op.drop_table("pair_rules")
    with op.batch_alter_table("proposals") as batch:
        batch.drop_column("held")
    with op.batch_alter_table("listings") as batch:
        batch.drop_constraint(op.f("ck_listings_held_in_reserved"), type_="check")
        batch.drop_column("held_hours")
    with op.batch_alter_table("organisations") as batch:
        batch.drop_column("webhook_secret")
        batch.drop_column("webhook_url")
