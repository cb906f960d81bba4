"""Market state: a supply-only version (sites, listings, certifications, holds), bumped with
the market version by supply writes only, so instant candidates keep their site side across
project writes.

Revision ID: 20261201_0006
Revises: 20261201_0005
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261201_0006"
down_revision: str | None = "20261201_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("market_state") as batch:
        batch.add_column(
            sa.Column("supply_version", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("market_state") as batch:
        batch.drop_column("supply_version")
