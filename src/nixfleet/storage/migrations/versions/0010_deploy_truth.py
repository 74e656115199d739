"""What is deployed: the last switch's outcome and the latest plan, per host.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("last_deploy", sa.JSON, nullable=True))
        batch.add_column(sa.Column("plan", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("plan")
        batch.drop_column("last_deploy")
