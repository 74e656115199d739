"""Single sign-on: where a user comes from, and the sign-ins under way.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("source", sa.String(10), nullable=False, server_default="local"))
        batch.add_column(sa.Column("subject", sa.String(255), nullable=True))
    op.create_table(
        "oidc_logins",
        sa.Column("state_hash", sa.String(64), primary_key=True),
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("verifier", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_oidc_logins_created", "oidc_logins", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_oidc_logins_created", "oidc_logins")
    op.drop_table("oidc_logins")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("subject")
        batch.drop_column("source")
