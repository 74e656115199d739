"""Web security: the last TOTP time step used per account (a code works only once).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "totp_steps",
        sa.Column("username", sa.String(100), primary_key=True),
        sa.Column("last_step", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("totp_steps")
