"""Output quota and retention: bytes stored per command, whether it was cut or pruned.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("commands") as batch:
        batch.add_column(
            sa.Column("output_bytes", sa.BigInteger, nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("output_truncated", sa.Boolean, nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("output_pruned", sa.Boolean, nullable=False, server_default="0"))
    op.create_index("ix_commands_finished", "commands", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_commands_finished", "commands")
    with op.batch_alter_table("commands") as batch:
        batch.drop_column("output_pruned")
        batch.drop_column("output_truncated")
        batch.drop_column("output_bytes")
