"""Shared limits: request-rate counters and event-stream seats, held by the database so
every replica counts against one limit (storage/ratecounts.py, storage/streamseats.py).

On PostgreSQL both tables are UNLOGGED: no write-ahead log for rows that live seconds to
minutes (a crash empties them, which only forgets the last window's counts).

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    unlogged = ["UNLOGGED"] if op.get_bind().dialect.name == "postgresql" else []
    op.create_table(
        "rate_counts",
        sa.Column("key", sa.String(160), primary_key=True),
        sa.Column("win", sa.BigInteger, primary_key=True),
        sa.Column("hits", sa.Integer, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        prefixes=unlogged,
    )
    op.create_index("ix_rate_counts_expires", "rate_counts", ["expires_at"])
    op.create_table(
        "stream_seats",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("replica", sa.String(64), nullable=False),
        sa.Column("session", sa.String(64), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("lease_until", sa.Float, nullable=False),
        prefixes=unlogged,
    )
    op.create_index("ix_stream_seats_replica", "stream_seats", ["replica"])


def downgrade() -> None:
    op.drop_index("ix_stream_seats_replica", "stream_seats")
    op.drop_table("stream_seats")
    op.drop_index("ix_rate_counts_expires", "rate_counts")
    op.drop_table("rate_counts")
