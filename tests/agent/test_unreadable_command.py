"""A command the agent cannot read — a health gate with a check kind it does not know, as a
newer or hostile dashboard may send — is refused by its id, nothing runs, and the agent
stays connected; before, one such message ended the agent process."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from conftest import wait_for


class FakeDashboard:
    """A WebSocket server that welcomes the agent and sends it the given messages."""

    def __init__(self, messages: list[Any]) -> None:
        self.messages = messages
        self.received: list[dict[str, Any]] = []
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        async def main() -> None:
            async with serve(self._session, "127.0.0.1", 0) as server:
                self.port = next(iter(server.sockets)).getsockname()[1]
                ready.set()
                await self.stop.wait()

        self.loop.run_until_complete(main())

    async def _session(self, ws: ServerConnection) -> None:
        self.received.append(json.loads(await ws.recv()))  # hello
        await ws.send(json.dumps({"type": "welcome", "heartbeat_s": 0.2, "branch": "main"}))
        for message in self.messages:  # a str is sent as it is (not JSON, say)
            await ws.send(message if isinstance(message, str) else json.dumps(message))
        async for raw in ws:
            self.received.append(json.loads(raw))

    def types(self) -> list[str]:
        return [m["type"] for m in self.received]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)


def test_a_command_with_an_unknown_gate_check_is_refused_and_the_agent_stays(agent, tmp_path):
    bad_gate = {"deadline_s": 5, "checks": [{"kind": "shell", "argv": ["rm", "-rf", "/"]}]}
    dashboard = FakeDashboard(
        [
            {"type": "command", "command_id": "c1", "kind": "switch", "gate": bad_gate},
            {"type": "mystery", "what": "a message of no known type"},
        ]
    )
    try:
        proc = agent(f"ws://127.0.0.1:{dashboard.port}", "--allow-insecure")
        refusal = wait_for(
            lambda: next((m for m in dashboard.received if m["type"] == "finished"), None),
            20,
            "the refusal",
        )
        assert refusal["command_id"] == "c1"
        assert refusal["result"] == "rejected"
        assert refusal["detail"].startswith("agent: this agent cannot read the command (")
        assert "gate.checks.0" in refusal["detail"]
        # Still connected and reporting: heartbeats keep coming after both messages.
        seen = len(dashboard.received)
        wait_for(lambda: dashboard.types()[seen:].count("status") >= 2, 20, "more heartbeats")
        assert proc.proc.poll() is None
        assert not (tmp_path / "agent0" / "state" / "journal" / "c1").exists()  # nothing ran
        assert "ignoring an unreadable message from the dashboard" in proc.log()
    finally:
        dashboard.close()


OUT_OF_BOUNDS = {
    # command id: (what the dashboard sent besides, the field the refusal must name)
    "short-gate": ({"gate": {"deadline_s": 0.5}}, "gate.deadline_s"),
    "long-gate": ({"gate": {"deadline_s": 3601}}, "gate.deadline_s"),
    "port": ({"gate": {"checks": [{"kind": "tcp", "port": 70000}]}}, "gate.checks.0.port"),
    "unit": ({"gate": {"checks": [{"kind": "unit", "unit": "x\n"}]}}, "gate.checks.0.unit"),
    "url": ({"gate": {"checks": [{"kind": "http", "url": "file:///etc"}]}}, "gate.checks.0.url"),
    "extra": ({"gate": {"deadline_s": 5, "argv": ["sh"]}}, "gate"),
    "generation": ({"kind": "rollback", "generation": -1}, "generation"),
    "expiry": ({"expires_at": "never"}, "expires_at"),
}


def test_commands_out_of_the_protocols_bounds_are_refused_each_by_its_id(agent, tmp_path):
    """Bounds a dashboard's own models would never send past, from a hostile or broken one;
    text that is not a message is skipped. Nothing runs and the agent stays connected."""
    commands = [
        {"type": "command", "command_id": cid, "kind": "switch", **extra}
        for cid, (extra, _field) in OUT_OF_BOUNDS.items()
    ]
    dashboard = FakeDashboard(
        [*commands, "not json {", "[1, 2]", json.dumps({"type": "ack", "command_id": "x"})]
    )
    try:
        proc = agent(f"ws://127.0.0.1:{dashboard.port}", "--allow-insecure")
        refusals = wait_for(
            lambda: (
                found
                if len(found := [m for m in dashboard.received if m["type"] == "finished"])
                == len(OUT_OF_BOUNDS)
                else None
            ),
            20,
            "a refusal for each command",
        )
        for refusal in refusals:
            _extra, field = OUT_OF_BOUNDS[refusal["command_id"]]
            assert refusal["result"] == "rejected"
            assert f"({field}" in refusal["detail"], refusal["detail"]
        seen = len(dashboard.received)
        wait_for(lambda: dashboard.types()[seen:].count("status") >= 2, 20, "more heartbeats")
        assert proc.proc.poll() is None
        assert not (tmp_path / "agent0" / "state" / "journal").exists() or not any(
            (tmp_path / "agent0" / "state" / "journal").iterdir()
        )
    finally:
        dashboard.close()
