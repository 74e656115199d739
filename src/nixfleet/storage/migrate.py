"""Bring a database to the newest schema with Alembic, configured in code (no alembic.ini).

A SQLite database already at the newest revision (every start but the first after an
upgrade) is recognised without Alembic: its one `alembic_version` row is compared with the
head of our scripts, read from their text. Alembic is imported only when there is work (or
doubt): it would load 117 modules and keep 9.5 MiB resident for the life of `serve` to
find nothing to do.
"""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url

from nixfleet.storage.db import engine_url

if TYPE_CHECKING:
    from alembic.config import Config

_SCRIPTS = Path(__file__).parent / "migrations"
_REVISION = re.compile(r'^revision(?::\s*str)?\s*=\s*"([0-9A-Za-z_]+)"\s*$', re.M)
_DOWN = re.compile(r'^down_revision(?::[^=]*)?\s*=\s*(?:None|"([0-9A-Za-z_]+)")\s*$', re.M)


def _config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Run every pending migration against url (blocking; call before serving)."""
    url = engine_url(url)
    if url.startswith("sqlite") and ":///" in url:
        Path(url.split(":///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
    if revision == "head" and _sqlite_at_head(url):
        return
    from alembic import command

    command.upgrade(_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Undo migrations down to revision ("base": an empty database)."""
    from alembic import command

    command.downgrade(_config(engine_url(url)), revision)


def script_head() -> str | None:
    """Return the newest revision of our migration scripts, or None unless they form one
    line (each names its revision and one parent, and exactly one is no one's parent)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (_SCRIPTS / "versions").glob("*.py"):
        if path.name == "__init__.py":
            continue
        text = path.read_text(encoding="utf-8")
        rev, down = _REVISION.findall(text), _DOWN.findall(text)
        if len(rev) != 1 or len(down) != 1:
            return None  # a merge point, or a form this reader does not know: Alembic decides
        revisions.add(rev[0])
        parents.update(d for d in down if d)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else None


def _sqlite_at_head(url: str) -> bool:
    """Return whether url is an existing SQLite file whose schema is at script_head()."""
    if not url.startswith("sqlite"):
        return False
    path = make_url(url).database
    if not path or path == ":memory:" or not Path(path).is_file():
        return False
    try:
        with closing(sqlite3.connect(path)) as conn:
            rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        return False  # no version table yet: a new database
    head = script_head()
    return head is not None and rows == [(head,)]
