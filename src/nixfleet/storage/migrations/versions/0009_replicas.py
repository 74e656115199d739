"""Replicas: the event journal other replicas read, replica leases, the host's holder.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bus_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("origin", sa.String(64), nullable=False),
        sa.Column("event", sa.JSON, nullable=False),
    )
    op.create_index("ix_bus_events_at", "bus_events", ["at"])
    op.create_table(
        "replicas",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("renewed_at", sa.Float, nullable=False),
        sa.Column("lease_until", sa.Float, nullable=False),
    )
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("replica", sa.String(64), nullable=True))
    op.create_index("ix_hosts_replica", "hosts", ["replica"])


def downgrade() -> None:
    op.drop_index("ix_hosts_replica", "hosts")
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("replica")
    op.drop_table("replicas")
    op.drop_index("ix_bus_events_at", "bus_events")
    op.drop_table("bus_events")
