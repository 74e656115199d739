"""Deploy on push: the forge deliveries seen, so a replayed one is refused.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hook_deliveries",
        sa.Column("forge", sa.String(12), primary_key=True),
        sa.Column("delivery", sa.String(100), primary_key=True),
        sa.Column("body_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("received_at", sa.Float, nullable=False),
    )
    op.create_index("ix_hook_deliveries_received", "hook_deliveries", ["received_at"])


def downgrade() -> None:
    op.drop_table("hook_deliveries")
