"""Match runs: runs, their assignments and unassigned projects, progress events (embedded).

Revision ID: 20261201_0002
Revises: 20261201_0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "20261201_0002"
down_revision: str | None = "20261201_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
TS = sa.DateTime(timezone=True)


def _run_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["run_id"],
        ["match_runs.id"],
        name=op.f(f"fk_{table}_run_id_match_runs"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "match_runs",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("scope", JSON, nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("replay_of", sa.String(64), nullable=True),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("market_version", sa.BigInteger(), nullable=True),
        sa.Column("progress", JSON, nullable=True),
        sa.Column("summary", JSON, nullable=True),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(128), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("snapshot_gz", sa.LargeBinary(), nullable=True),
        sa.Column("snapshot_hash", sa.String(64), nullable=True),
        sa.Column("snapshot_bytes", sa.Integer(), nullable=True),
        sa.Column("snapshot_pruned", sa.Boolean(), nullable=False),
        sa.Column("versions", JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("enqueued_at", TS, nullable=True),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("heartbeat_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_match_runs")),
    )
    op.create_index(op.f("ix_match_runs_status"), "match_runs", ["status"])
    op.create_table(
        "match_run_assignments",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("pos", sa.String(12), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("cdmo_id", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("share", sa.Float(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("detail", sa.String(), nullable=True),
        _run_fk("match_run_assignments"),
        sa.PrimaryKeyConstraint("run_id", "pos", name=op.f("pk_match_run_assignments")),
    )
    op.create_table(
        "match_run_unassigned",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("pos", sa.String(12), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.String(), nullable=False),
        sa.Column("shortfalls", JSON, nullable=False),
        _run_fk("match_run_unassigned"),
        sa.PrimaryKeyConstraint("run_id", "pos", name=op.f("pk_match_run_unassigned")),
    )
    op.create_table(
        "match_run_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("data", JSON, nullable=False),
        _run_fk("match_run_events"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_match_run_events")),
    )
    op.create_index(op.f("ix_match_run_events_run_id"), "match_run_events", ["run_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_match_run_events_run_id"), table_name="match_run_events")
    op.drop_table("match_run_events")
    op.drop_table("match_run_unassigned")
    op.drop_table("match_run_assignments")
    op.drop_index(op.f("ix_match_runs_status"), table_name="match_runs")
    op.drop_table("match_runs")
