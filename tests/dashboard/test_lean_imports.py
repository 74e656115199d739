"""A running dashboard, and the `nixfleet` command, never load SQLAlchemy's ORM: on either
engine, through start-up, agents connecting, a command run end to end, a page and a CLI
write, not one module of `sqlalchemy.orm` or `sqlalchemy.ext.asyncio` is imported (they cost
every dashboard 6 MiB of its floor and 70–90 ms of start-up; storage/asyncengine.py replaces
them).

Python's own import log (`PYTHONPROFILEIMPORTTIME`) names each module the moment the process
first imports it, whenever that is, so lazy imports on first use are seen too.
"""

from __future__ import annotations

import pytest

from conftest import run_cli

ORM = ("sqlalchemy.orm", "sqlalchemy.ext.asyncio")
IMPORT_LOG = {"PYTHONPROFILEIMPORTTIME": "1"}


def _imported(log: str) -> set[str]:
    """Return the modules an import log names (lines `import time: self | total | name`)."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in log.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }


def _orm_modules(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.startswith(ORM))


@pytest.mark.usefixtures("backend")
def test_a_running_dashboard_and_the_cli_never_load_the_orm(make_fleet):
    fleet = make_fleet(hosts=1, env=IMPORT_LOG)
    api = fleet.api()
    cmd = api.wait_state(api.command("atlas", "test"), {"succeeded", "failed"})
    assert cmd["state"] == "succeeded"
    assert api.get("/hosts/atlas").status_code == 200
    added = run_cli(["admin", "host", "add", "web-09"], {**fleet.fleet.env, **IMPORT_LOG})
    assert added.returncode == 0, added.stderr
    fleet.stop()
    served = _imported((fleet.fleet.root / "dashboard.log").read_text(errors="replace"))
    assert "sqlalchemy.engine.base" in served  # the log is there and names SQLAlchemy
    assert _orm_modules(served) == []
    cli = _imported(added.stderr)
    assert "sqlalchemy.engine.base" in cli
    assert _orm_modules(cli) == []
