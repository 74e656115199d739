"""Agent identity: token state and last use, client-cert binding, retired tokens,
enrollment codes.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(
            sa.Column("identity_state", sa.String(12), nullable=False, server_default="none")
        )
        batch.add_column(sa.Column("token_used_at", sa.Float, nullable=True))
        batch.add_column(sa.Column("token_used_from", sa.String(64), nullable=True))
        batch.add_column(sa.Column("cert_sha256", sa.String(64), nullable=True))
    op.execute("UPDATE hosts SET identity_state = 'active' WHERE token_hash IS NOT NULL")
    op.create_index("ix_hosts_token_hash", "hosts", ["token_hash"], unique=True)
    op.create_table(
        "retired_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column(
            "host_id",
            sa.String(63),
            sa.ForeignKey("hosts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("reason", sa.String(12), nullable=False),
        sa.Column("retired_at", sa.Float, nullable=False),
        sa.Column("valid_until", sa.Float, nullable=True),
    )
    op.create_table(
        "enroll_codes",
        sa.Column("code_hash", sa.String(64), primary_key=True),
        sa.Column(
            "host_id",
            sa.String(63),
            sa.ForeignKey("hosts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("used_at", sa.Float, nullable=True),
        sa.Column("used_from", sa.String(64), nullable=True),
    )
    op.create_index("ix_enroll_codes_host", "enroll_codes", ["host_id"])


def downgrade() -> None:
    op.drop_table("enroll_codes")
    op.drop_table("retired_tokens")
    op.drop_index("ix_hosts_token_hash", "hosts")
    with op.batch_alter_table("hosts") as batch:
        for name in ("cert_sha256", "token_used_from", "token_used_at", "identity_state"):
            batch.drop_column(name)
