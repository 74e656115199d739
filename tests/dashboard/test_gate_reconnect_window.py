"""A gated switch whose agent went away is not `lost` while its health gate may still be
running: the agent is meant to be away when the new generation broke its network, and the
runner's true result (`rolled_back`, or `succeeded` once it is back) follows. Only after
the gate's deadline and the reconnect window is it declared lost; an ungated command that
left at the same moment is lost after the window alone.

Both hosts are played by hand-driven agents (tests/rawagent.py) on a real dashboard whose
reconnect window is one second.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from conftest import Api, RunningFleet, wait_for
from rawagent import connect, messages_until

GATE_S = 8


def command(api: Api, host: str) -> dict[str, Any]:
    (cmd,) = api.get(f"/api/hosts/{host}/commands").json()["commands"]
    return dict(cmd)


async def start_and_leave(rf: RunningFleet, host: str) -> str:
    """Take the host's command, say it started, and drop the connection."""
    ws = await connect(rf.base, host, rf.host(host).token_file.read_text().strip())
    msg = await messages_until(ws, lambda m: m["type"] == "command")
    started = {"type": "started", "command_id": msg["command_id"], "started_at": 1.0}
    await ws.send(json.dumps(started))
    await asyncio.sleep(0.3)  # the started is read before the close
    await ws.close()
    return str(msg["command_id"])


def test_a_gated_switch_waits_out_its_gate_before_it_is_lost(make_fleet):
    rf: RunningFleet = make_fleet(
        hosts=2, agents=False, env={"NIXFLEET_RECONNECT_WINDOW_S": "1"}, failing=()
    )
    api = rf.api()
    gate = {"deadline_s": GATE_S, "confirm": True}
    res = api.post("/api/hosts/atlas/command", {"command": "switch", "gate": gate})
    assert res.status_code == 202, res.text
    res = api.post("/api/hosts/borealis/command", {"command": "switch", "no_gate": True})
    assert res.status_code == 202, res.text

    async def both() -> None:
        await asyncio.gather(start_and_leave(rf, "atlas"), start_and_leave(rf, "borealis"))

    asyncio.run(both())
    lost = wait_for(
        lambda: (c := command(api, "borealis"))["state"] == "lost" and c,
        30, "the ungated switch to be lost after the window",
    )  # fmt: skip
    assert lost["detail"] == "the agent did not reconnect within the reconnect window"
    gated = command(api, "atlas")
    assert gated["state"] == "running" and gated["disconnected_at"]
    assert gated["gate"]["deadline_s"] == GATE_S

    lost = wait_for(
        lambda: (c := command(api, "atlas"))["state"] == "lost" and c,
        60, "the gated switch to be lost after its gate and the window",
    )  # fmt: skip
    assert lost["detail"] == (
        "the agent did not reconnect within its health gate and the reconnect window"
    )
