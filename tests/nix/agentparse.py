"""Run the real `nixfleet agent` command-line parser on an argv and return what it built."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from nixfleet.cli.main import app


def parse_agent(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """Return the AgentOptions `nixfleet agent ARGV` would run with (nothing is started)."""
    seen: list[Any] = []
    monkeypatch.setattr("nixfleet.agent.daemon.run_agent", seen.append)
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert len(seen) == 1
    return seen[0]
