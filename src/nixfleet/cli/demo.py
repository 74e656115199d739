"""`nixfleet demo`: a dashboard and simulated hosts running the real agent."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nixfleet.cli.common import configure_logging, fail


def demo(
    hosts: Annotated[int, typer.Option(min=1, max=200, help="Simulated hosts.")] = 6,
    port: int = 8000,
    data_dir: Path = Path("nixfleet-demo"),
    duration: Annotated[
        float, typer.Option(help="Seconds a command's output is spread over (demo pacing).")
    ] = 4.0,
) -> None:
    """Start the dashboard and simulated hosts running the real agent (loopback only)."""
    from nixfleet.demo.run import DemoError, run_demo

    configure_logging("warning")
    try:
        run_demo(hosts=hosts, port=port, data_dir=data_dir, build_seconds=duration)
    except DemoError as exc:
        fail(str(exc))
