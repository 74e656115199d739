"""Initial schema: hosts, commands, output, sessions.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hosts",
        sa.Column("id", sa.String(63), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=True),
        sa.Column("location", sa.String(200), nullable=False, server_default=""),
        sa.Column("device_type", sa.String(40), nullable=False, server_default=""),
        sa.Column("theme_color", sa.String(20), nullable=False, server_default=""),
        sa.Column("status", sa.JSON, nullable=True),
        sa.Column("online", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("connected_at", sa.Float, nullable=True),
        sa.Column("last_seen", sa.Float, nullable=True),
        sa.Column("last_test", sa.JSON, nullable=True),
    )
    op.create_table(
        "commands",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "host_id",
            sa.String(63),
            sa.ForeignKey("hosts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=True),
        sa.Column("dispatched_at", sa.Float, nullable=True),
        sa.Column("started_at", sa.Float, nullable=True),
        sa.Column("finished_at", sa.Float, nullable=True),
        sa.Column("disconnected_at", sa.Float, nullable=True),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("detail", sa.Text, nullable=False, server_default=""),
        sa.Column("warned", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("tests", sa.JSON, nullable=True),
    )
    op.create_index("ix_commands_host_created", "commands", ["host_id", "created_at"])
    op.create_index("ix_commands_state", "commands", ["state"])
    op.create_table(
        "output",
        sa.Column(
            "command_id",
            sa.String(32),
            sa.ForeignKey("commands.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("stream", sa.String(8), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
    )
    op.create_table(
        "sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("username", sa.String(100), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
        sa.Column("address", sa.String(64), nullable=False, server_default=""),
    )


def downgrade() -> None:
    for name in ("sessions", "output", "commands", "hosts"):
        op.drop_table(name)
