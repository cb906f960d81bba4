"""Market state: a supply-only version (sites, listings, certifications, holds), bumped with
the market version by supply writes only, so instant candidates keep their site side across
project writes. Run explanations: computed by the worker when a run commits, read by the API.

Revision ID: 20261201_0007
Revises: 20261201_0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

revision: str = "20261201_0007"
down_revision: str | None = "20261201_0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("market_state") as batch:
        batch.add_column(
            sa.Column("supply_version", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.create_table(
        "run_explanations",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("body", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["match_runs.id"],
            name=op.f("fk_run_explanations_run_id_match_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "kind", "subject_id", name=op.f("pk_run_explanations")),
    )


def downgrade() -> None:
    op.drop_table("run_explanations")
    with op.batch_alter_table("market_state") as batch:
        batch.drop_column("supply_version")
