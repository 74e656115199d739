"""The `nixfleet` command's entry point: `nixfleet agent …` and `nixfleet serve …` go
straight to their own argparse parsers, everything else to the typer application
(cli/main.py).

The agent runs on every host: typer, click and rich would cost it about 15 MiB of resident
memory for a parser it does not need; typer would cost the dashboard, which runs for
months, 1.5 MiB (docs/benchmarks.md).
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["agent"]:
        from nixfleet.cli.agent import run

        run(sys.argv[2:])
        return
    if sys.argv[1:2] == ["serve"]:
        from nixfleet.cli.serve import run as serve

        serve(sys.argv[2:])
        return
    from nixfleet.cli.main import main as full

    full()
