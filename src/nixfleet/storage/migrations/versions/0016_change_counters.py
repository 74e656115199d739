"""Change counters, kept by triggers: a dashboard re-checks live agent credentials (or
rescans the hosts) only when its counter moved.

Triggers rather than code in each store function: every write moves the counter, also
one from the CLI, another replica, a script or a store function written later.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# (trigger, events, counter): a host added or removed; a host's credential changed.
TRIGGERS = (
    ("hosts_added", "INSERT", "hosts"),
    ("hosts_removed", "DELETE", "hosts"),
    ("credentials_removed", "DELETE", "credentials"),
    ("credentials_changed", "UPDATE OF token_hash, identity_state", "credentials"),
)
_BUMP = (
    "INSERT INTO change_counters (name, value) VALUES ('{name}', 1) "
    "ON CONFLICT (name) DO UPDATE SET value = change_counters.value + 1"
)
_PG_FUNCTION = """
CREATE FUNCTION nixfleet_count_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO change_counters (name, value) VALUES (TG_ARGV[0], 1)
    ON CONFLICT (name) DO UPDATE SET value = change_counters.value + 1;
    RETURN NULL;
END $$
"""


def upgrade() -> None:
    # No rows: a missing counter reads 0, and `db copy` wants a fresh target empty.
    op.create_table(
        "change_counters",
        sa.Column("name", sa.String(20), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute(_PG_FUNCTION)
    for trigger, events, name in TRIGGERS:
        if postgres:
            op.execute(
                f"CREATE TRIGGER {trigger} AFTER {events} ON hosts "
                f"FOR EACH ROW EXECUTE FUNCTION nixfleet_count_change('{name}')"
            )
        else:
            op.execute(
                f"CREATE TRIGGER {trigger} AFTER {events} ON hosts "
                f"BEGIN {_BUMP.format(name=name)}; END"
            )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for trigger, _, _ in TRIGGERS:
        op.execute(f"DROP TRIGGER {trigger}" + (" ON hosts" if postgres else ""))
    if postgres:
        op.execute("DROP FUNCTION nixfleet_count_change()")
    op.drop_table("change_counters")
