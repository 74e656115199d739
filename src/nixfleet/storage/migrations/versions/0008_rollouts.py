"""Rollouts: a command for many hosts in waves, and each host's place in one.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("source", sa.String(80), nullable=False, server_default=""),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("target", sa.String(64), nullable=True),
        sa.Column("policy", sa.JSON, nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("wave", sa.Integer, nullable=False),
        sa.Column("waves", sa.Integer, nullable=False),
        sa.Column("next_wave_at", sa.Float, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float, nullable=True),
        sa.Column("reason", sa.String(200), nullable=False, server_default=""),
        sa.Column("report", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("ix_rollouts_state", "rollouts", ["state"])
    op.create_index("ix_rollouts_created", "rollouts", ["created_at"])
    op.create_table(
        "rollout_hosts",
        sa.Column(
            "rollout_id",
            sa.String(32),
            sa.ForeignKey("rollouts.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("host_id", sa.String(63), primary_key=True),
        sa.Column("wave", sa.Integer, nullable=False),
        sa.Column("command_id", sa.String(32), nullable=True),
    )
    op.create_index("ix_rollout_hosts_wave", "rollout_hosts", ["rollout_id", "wave"])
    op.create_index("ix_rollout_hosts_command", "rollout_hosts", ["command_id"])


def downgrade() -> None:
    op.drop_table("rollout_hosts")
    op.drop_table("rollouts")
