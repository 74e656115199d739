"""The agent's messages (core/wire.py, msgspec) and the dashboard's (core/protocol.py,
pydantic) are one protocol: the agent's form is rendered from the dashboard's models, and
both accept and refuse the same messages, bound by bound."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pydantic
import pytest

from nixfleet.agent import codec
from nixfleet.core import protocol, wire, wiregen

WIRE = Path(wire.__file__)

GOOD_ID = "c1"
STATUS: dict[str, Any] = {"hostname": "atlas", "generation": 3, "load1": 0.5}
HELLO: dict[str, Any] = {
    "type": "hello",
    "protocol": 1,
    "host_id": "atlas",
    "agent_version": "0.1",
    "status": STATUS,
}
FINISHED: dict[str, Any] = {
    "type": "finished",
    "command_id": GOOD_ID,
    "result": "succeeded",
    "exit_code": 0,
    "duration_s": 1.5,
    "last_seq": 2,
}
COMMAND: dict[str, Any] = {"type": "command", "command_id": GOOD_ID, "kind": "switch"}
GATE: dict[str, Any] = {"deadline_s": 30, "checks": [{"kind": "tcp", "port": 22}]}


def _with(base: dict[str, Any], **change: Any) -> dict[str, Any]:
    return {**base, **change}


def test_the_agents_form_is_what_the_dashboards_models_render() -> None:
    """Regenerate with `python -m nixfleet.core.wiregen > src/nixfleet/core/wire.py`."""
    assert WIRE.read_text() == wiregen.render()


def test_every_message_of_either_side_has_an_agent_form_of_the_same_name() -> None:
    for union, light in (
        (protocol.AgentMessage, wire.AgentMessage),
        (protocol.DashboardMessage, wire.DashboardMessage),
    ):
        names = [m.__name__ for m in wiregen._members(union)]
        assert names == [m.__name__ for m in light.__args__]


AGENT_SENDS = [
    HELLO,
    _with(HELLO, known_commands=[GOOD_ID], meta={"location": "rack 2", "labels": {"a": "b"}}),
    _with(HELLO, protocol=-1),
    _with(HELLO, protocol=True),
    _with(HELLO, host_id="h" * 64),
    _with(HELLO, agent_version="v\x00"),
    _with(HELLO, known_commands=["bad id"]),
    _with(HELLO, known_commands=[f"c{i}" for i in range(65)]),
    _with(HELLO, meta={"theme_color": "red"}),
    _with(HELLO, meta={"labels": {"Role": "web"}}),
    _with(HELLO, transport={"breaker": "ajar"}),
    _with(HELLO, transport={"tls_failures": [{"kind": "expired", "count": 0, "age_s": 1}]}),
    _with(HELLO, status=_with(STATUS, generation=2**31)),
    _with(HELLO, status=_with(STATUS, generation=1.0)),
    _with(HELLO, status=_with(STATUS, load1="0.5")),
    _with(HELLO, status=_with(STATUS, uptime_s=-1)),
    _with(HELLO, status=_with(STATUS, os_kind="windows")),
    _with(HELLO, status=_with(STATUS, deployed_commit="a" * 40)),
    _with(HELLO, status=_with(STATUS, deployed_commit="a" * 40 + "\n")),
    _with(HELLO, status=_with(STATUS, generations=[{"number": i} for i in range(21)])),
    _with(HELLO, status=_with(STATUS, current_boot={"kernel": "k" * 1025})),
    _with(HELLO, status=_with(STATUS, unknown_field=1)),
    FINISHED,
    _with(FINISHED, command_id="c1\n"),
    _with(FINISHED, command_id="c" * 65),
    _with(FINISHED, result="exploded"),
    _with(FINISHED, exit_code=None),
    _with(FINISHED, exit_code=2**31),
    _with(FINISHED, duration_s=-0.1),
    _with(FINISHED, detail="d" * 2001),
    _with(FINISHED, tests=[{"name": "T1", "ok": True, "exit_code": 0}]),
    _with(FINISHED, plan={"changed": True, "restart": ["nginx.service"] * 201}),
    _with(FINISHED, change={"before": {"generation": 1}, "after": {"commit": "xyz"}}),
    {"type": "output", "command_id": GOOD_ID, "lines": [{"seq": 1, "text": "hi"}]},
    {"type": "output", "command_id": GOOD_ID, "lines": [{"seq": 0, "text": "hi"}]},
    {"type": "output", "command_id": GOOD_ID, "lines": [{"seq": 1, "text": "x" * 65537}]},
    {"type": "output", "command_id": GOOD_ID, "lines": [{"seq": 1, "stream": "tty", "text": ""}]},
    {"type": "started", "command_id": GOOD_ID, "started_at": 1.0e9},
    {"type": "started", "command_id": GOOD_ID, "started_at": 5.0e9},
    {"type": "status", "status": STATUS, "ref": 2**63},
    {"type": "warning", "command_id": GOOD_ID, "text": "slow"},
    {"type": "credential_saved"},
    {"type": "goodbye"},
    [HELLO],
]
DASHBOARD_SENDS = [
    {"type": "welcome", "heartbeat_s": 30, "branch": "main"},
    {"type": "welcome", "heartbeat_s": "30", "branch": "main"},
    {"type": "welcome", "branch": "main"},
    COMMAND,
    _with(COMMAND, expires_at=1.0e9, generation=4),
    _with(COMMAND, generation=-1),
    _with(COMMAND, generation=2**31),
    _with(COMMAND, command_id=7),
    _with(COMMAND, gate=GATE),
    _with(COMMAND, gate=_with(GATE, deadline_s=0.5)),
    _with(COMMAND, gate=_with(GATE, deadline_s=3601)),
    _with(COMMAND, gate=_with(GATE, confirm=False, checks=[])),
    _with(COMMAND, gate=_with(GATE, extra="no")),
    _with(COMMAND, gate=_with(GATE, checks=[{"kind": "tcp", "port": 65536}])),
    _with(COMMAND, gate=_with(GATE, checks=[{"kind": "tcp", "port": 22, "host": "a b"}])),
    _with(COMMAND, gate=_with(GATE, checks=[{"kind": "unit", "unit": "nginx"}])),
    _with(COMMAND, gate=_with(GATE, checks=[{"kind": "unit", "unit": "nginx\n"}])),
    _with(COMMAND, gate=_with(GATE, checks=[{"kind": "http", "url": "file:///etc/passwd"}])),
    _with(COMMAND, gate=_with(GATE, checks=[{"kind": "tests", "name": "-bad"}])),
    _with(COMMAND, gate=_with(GATE, checks=[{"kind": "tests", "argv": ["sh"]}])),
    _with(COMMAND, gate=_with(GATE, checks=[{"kind": "shell", "argv": ["sh"]}])),
    _with(COMMAND, gate=_with(GATE, checks=[{"kind": "tests"}] * 17)),
    {"type": "cancel", "command_id": GOOD_ID},
    {"type": "ack", "command_id": GOOD_ID, "seq": 3, "final": True},
    {"type": "ack", "command_id": GOOD_ID, "seq": 3.5},
    {"type": "status_ack", "ref": None},
    {"type": "credential", "token": "nfa_x"},
    {"type": "credential"},
    {"type": "mystery"},
    "welcome",
]


def _pydantic_accepts(adapter: pydantic.TypeAdapter[Any], raw: bytes) -> bool:
    try:
        adapter.validate_json(raw)
    except pydantic.ValidationError:
        return False
    return True


def _msgspec_accepts(shape: Any, raw: bytes) -> bool:
    try:
        msgspec.json.decode(raw, type=shape)
    except msgspec.ValidationError:
        return False
    return True


@pytest.mark.parametrize("message", AGENT_SENDS, ids=lambda m: json.dumps(m)[:60])
def test_the_agent_and_the_dashboard_agree_on_every_agent_message(message: Any) -> None:
    raw = json.dumps(message).encode()
    dashboard = _pydantic_accepts(protocol.agent_message, raw)
    assert _msgspec_accepts(wire.AgentMessage, raw) == dashboard


@pytest.mark.parametrize("message", DASHBOARD_SENDS, ids=lambda m: json.dumps(m)[:60])
def test_the_agent_and_the_dashboard_agree_on_every_dashboard_message(message: Any) -> None:
    raw = json.dumps(message).encode()
    dashboard = _pydantic_accepts(protocol.dashboard_message, raw)
    assert _msgspec_accepts(wire.DashboardMessage, raw) == dashboard


def test_what_the_agent_writes_the_dashboard_reads_back_unchanged() -> None:
    hello = codec.convert(
        wire.Hello,
        _with(HELLO, meta={"labels": {"role": "web"}}, transport={"down_s": 3.5}),
    )
    read = protocol.agent_message.validate_json(codec.encode(hello))
    assert isinstance(read, protocol.Hello)
    assert read.model_dump() == msgspec.to_builtins(hello)


def test_what_the_dashboard_writes_the_agent_reads_back_unchanged() -> None:
    command = protocol.Command(
        command_id=GOOD_ID,
        kind="switch",
        gate=protocol.HealthGate.model_validate(GATE),
        generation=3,
    )
    read = codec.read_dashboard(command.model_dump_json())
    assert isinstance(read, wire.Command)
    assert msgspec.to_builtins(read) == command.model_dump()


def test_the_agent_refuses_to_send_a_message_out_of_bounds() -> None:
    too_long = wire.Warning(command_id=GOOD_ID, text="w" * 2001)
    with pytest.raises(codec.Invalid, match="text"):
        codec.encode(too_long)


def test_a_credential_never_shows_its_token() -> None:
    assert "nfa_secret" not in repr(wire.Credential(token="nfa_secret"))
