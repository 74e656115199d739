"""The `nixfleet` command's entry point: `nixfleet agent …` goes straight to the agent's
argparse parser, everything else to the typer application (cli/main.py).

The agent runs on every host: typer, click and rich would cost it about 15 MiB of resident
memory for a parser it does not need (docs/benchmarks.md).
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["agent"]:
        from nixfleet.cli.agent import run

        run(sys.argv[2:])
        return
    from nixfleet.cli.main import main as full

    full()
