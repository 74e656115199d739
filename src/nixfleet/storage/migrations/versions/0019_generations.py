"""A rollback's chosen generation, each switch's from → to, and each host's state history.

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("commands") as batch:
        batch.add_column(sa.Column("generation", sa.Integer, nullable=True))
        batch.add_column(sa.Column("change", sa.JSON, nullable=True))
    op.create_table(
        "host_states",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "host_id",
            sa.String(63),
            sa.ForeignKey("hosts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("field", sa.String(20), nullable=False),
        sa.Column("value", sa.String(40), nullable=False),
        sa.Column("detail", sa.String(200), nullable=False, server_default=""),
    )
    op.create_index("ix_host_states_host_at", "host_states", ["host_id", "at"])
    op.create_index("ix_host_states_at", "host_states", ["at"])


def downgrade() -> None:
    op.drop_index("ix_host_states_at", "host_states")
    op.drop_index("ix_host_states_host_at", "host_states")
    op.drop_table("host_states")
    with op.batch_alter_table("commands") as batch:
        batch.drop_column("change")
        batch.drop_column("generation")
