"""The same Alembic chain builds the same schema on SQLite and on PostgreSQL, and that
schema is the one the code's tables describe."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from conftest import Backend
from nixfleet.storage.migrate import downgrade, upgrade
from nixfleet.storage.tables import metadata


def _sync_url(url: str) -> str:
    return url.replace("sqlite+aiosqlite", "sqlite")


def _type(t: sa.types.TypeEngine[Any]) -> tuple[Any, ...]:
    # Each engine spells a type its own way (FLOAT vs DOUBLE PRECISION); what matters is
    # the family, and the length where the engine enforces one. Every SQLite integer has
    # 64 bits (an autoincrement key must say INTEGER there): the width is checked per
    # engine against the code's tables, by the next test.
    if isinstance(t, sa.Integer):
        return ("Integer",)
    for family in (sa.Boolean, sa.JSON, sa.Float):
        if isinstance(t, family):
            return (family.__name__,)
    if isinstance(t, sa.String) and t.length is not None:
        return ("String", t.length)
    if isinstance(t, sa.String):
        return ("Text",)
    raise AssertionError(f"unexpected column type {t!r}")


def _default(value: str | None) -> str | None:
    if value is None or value.startswith("nextval("):
        return None
    value = value.split("::", 1)[0].strip("'")
    return {"0": "false", "1": "true"}.get(value, value)


def _schema(url: str) -> dict[str, Any]:
    """Return every table's columns, keys, indexes and constraints, engine-neutral."""
    engine = sa.create_engine(_sync_url(url))
    try:
        insp = sa.inspect(engine)
        out: dict[str, Any] = {}
        for table in sorted(insp.get_table_names()):
            columns = [
                (c["name"], _type(c["type"]), c["nullable"], _default(c["default"]))
                for c in insp.get_columns(table)
            ]
            indexes = sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in insp.get_indexes(table)
                if "duplicates_constraint" not in i
            )
            fks = sorted(
                (
                    tuple(f["constrained_columns"]),
                    f["referred_table"],
                    tuple(f["referred_columns"]),
                    (f.get("options") or {}).get("ondelete", "").upper(),
                )
                for f in insp.get_foreign_keys(table)
            )
            out[table] = {
                "columns": columns,
                "primary key": insp.get_pk_constraint(table)["constrained_columns"],
                "indexes": indexes,
                "unique": sorted(
                    tuple(u["column_names"]) for u in insp.get_unique_constraints(table)
                ),
                "foreign keys": fks,
            }
        return out
    finally:
        engine.dispose()


def test_the_migration_chain_builds_the_same_schema_on_sqlite_and_postgresql(tmp_path, pg_cluster):
    lite = f"sqlite+aiosqlite:///{tmp_path / 'chain.db'}"
    name = pg_cluster.create_database()
    try:
        pg = pg_cluster.url(name)
        upgrade(lite)
        upgrade(pg)
        lite_schema, pg_schema = _schema(lite), _schema(pg)
    finally:
        pg_cluster.drop_database(name)
    assert set(lite_schema) >= {"hosts", "commands", "output", "audit_log", "alembic_version"}
    for table in lite_schema:
        assert pg_schema[table] == lite_schema[table], table
    assert set(pg_schema) == set(lite_schema)


def test_the_migrated_schema_is_the_one_the_code_queries(backend: Backend):
    upgrade(backend.url)
    engine = sa.create_engine(_sync_url(backend.url))
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_the_chain_goes_down_to_nothing_and_up_again(backend: Backend):
    upgrade(backend.url)
    downgrade(backend.url, "base")
    assert set(_schema(backend.url)) <= {"alembic_version"}
    upgrade(backend.url)
    assert "audit_log" in _schema(backend.url)


def test_replicas_starting_together_on_postgresql_migrate_once(pg_cluster):
    url = pg_cluster.url(pg_cluster.create_database())
    env = {**os.environ, "NIXFLEET_DATABASE_URL": url, "NIXFLEET_DEMO": "true"}
    procs = [
        subprocess.Popen([sys.executable, "-m", "nixfleet", "db", "upgrade"], env=env)
        for _ in range(3)
    ]
    # Without the migration lock, the losers would fail with "relation already exists".
    assert [p.wait(60) for p in procs] == [0, 0, 0]
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    finally:
        engine.dispose()
    assert len(versions) == 1
