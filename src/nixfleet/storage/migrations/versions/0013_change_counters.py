"""Change counters: a dashboard re-checks live agent credentials only when one moved.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # No rows: a missing counter reads 0, and `db copy` wants a fresh target empty.
    op.create_table(
        "change_counters",
        sa.Column("name", sa.String(20), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("change_counters")
