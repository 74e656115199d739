"""Health gates: a switch's own gate, and each host's default gate (core.gates).

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
    with op.batch_alter_table("commands") as batch:
        batch.add_column(sa.Column("gate", sa.JSON, nullable=True))
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("health_gate", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("health_gate")
    with op.batch_alter_table("commands") as batch:
        batch.drop_column("gate")
