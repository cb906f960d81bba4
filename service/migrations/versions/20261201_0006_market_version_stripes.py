"""Market version in stripes: every market write bumps one of MARKET_STATE_STRIPES rows and
the version is their sum, so concurrent writers no longer queue on one row lock.

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

STRIPES = 32  # service.models.MARKET_STATE_STRIPES at the time of this revision

market_state = sa.table(
    "market_state", sa.column("id", sa.Integer), sa.column("version", sa.BigInteger)
)


def upgrade() -> None:
    op.bulk_insert(market_state, [{"id": i, "version": 0} for i in range(2, STRIPES + 1)])


def downgrade() -> None:
    # fold every stripe into row 1 so the version stays what it was
    op.execute(
        "UPDATE market_state SET version = (SELECT sum(version) FROM market_state) WHERE id = 1"
    )
    op.execute("DELETE FROM market_state WHERE id <> 1")
