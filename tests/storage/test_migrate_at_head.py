"""`nixfleet serve` on a SQLite database already at the newest schema starts without
Alembic (117 modules, 9.5 MiB kept resident); any other database is still migrated."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

from nixfleet.storage import migrate
from nixfleet.storage.migrate import downgrade, script_head, upgrade

PROBE = """
import sys
from nixfleet.storage.migrate import upgrade
upgrade(sys.argv[1])
print("alembic" in sys.modules)
"""


def _version(path: Path) -> list[tuple[str]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT version_num FROM alembic_version").fetchall()


def _upgrade_in_a_fresh_process(url: str) -> bool:
    """Run upgrade(url) in a new interpreter; return whether it imported Alembic."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, url], capture_output=True, text=True, check=True
    )
    return out.stdout.strip() == "True"


def test_the_head_read_from_the_scripts_is_alembics():
    config = Config()
    config.set_main_option("script_location", str(migrate._SCRIPTS))
    assert ScriptDirectory.from_config(config).get_heads() == [script_head()]


def test_only_a_database_behind_the_scripts_loads_alembic(tmp_path):
    path = tmp_path / "fleet.db"
    url = f"sqlite:///{path}"
    assert _upgrade_in_a_fresh_process(url)  # a new database: every migration runs
    head = _version(path)
    assert head == [(script_head(),)]
    assert not _upgrade_in_a_fresh_process(url)  # at head: nothing to do, no Alembic
    assert _version(path) == head
    previous = ScriptDirectory.from_config(migrate._config(url)).get_revision(head[0][0])
    downgrade(url, previous.down_revision)
    assert _upgrade_in_a_fresh_process(url)  # one behind: migrated again
    assert _version(path) == head


def test_a_script_the_reader_cannot_place_leaves_the_decision_to_alembic(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    upgrade(url)
    assert migrate._sqlite_at_head(url)
    scripts = tmp_path / "migrations"
    (scripts / "versions").mkdir(parents=True)
    for src in (migrate._SCRIPTS / "versions").glob("*.py"):
        (scripts / "versions" / src.name).write_text(src.read_text())
    # A newer script named out of the usual pattern, whose parent is a tuple (a merge).
    (scripts / "versions" / "merge_heads.py").write_text(
        f'revision = "abc123"\ndown_revision = ("{script_head()}", "other")\n'
    )
    monkeypatch.setattr(migrate, "_SCRIPTS", scripts)
    assert script_head() is None
    assert not migrate._sqlite_at_head(url)  # so upgrade() runs Alembic
