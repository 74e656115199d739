"""How the agent writes and reads protocol messages: core/wire.py's Structs as JSON.

Every message the agent sends is checked against the protocol's bounds before it leaves
(a Struct is not checked when it is built), so the dashboard never has to refuse one; every
dashboard message is checked on arrival. Both checks are the generated Structs', which
core/wiregen.py derives from the dashboard's own models.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

from nixfleet.core import wire

# A field out of bounds; Unreadable also covers text that is not JSON at all.
Invalid = msgspec.ValidationError
Unreadable = msgspec.DecodeError
_S = TypeVar("_S", bound=msgspec.Struct)

_encoder = msgspec.json.Encoder()
_dashboard = msgspec.json.Decoder(wire.DashboardMessage)
_WHERE = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")


def encode(message: msgspec.Struct) -> str:
    """Return message as JSON text, or raise Invalid naming the field out of bounds.

    Text, not bytes: websockets sends bytes as a binary frame, which the dashboard refuses.
    """
    data = _encoder.encode(message)
    msgspec.json.decode(data, type=type(message))
    return data.decode()


def json_size(message: msgspec.Struct) -> int:
    """Return the bytes of message as JSON (unchecked: for batching lines)."""
    return len(_encoder.encode(message))


def read_dashboard(raw: str | bytes) -> wire.DashboardMessage:
    """Return the dashboard message in raw, or raise Unreadable saying where it is wrong."""
    return _dashboard.decode(raw)


def convert(model: type[_S], raw: object) -> _S:
    """Return raw (JSON-like Python values) as model, or raise Invalid."""
    return msgspec.convert(raw, model)


def where(exc: Exception) -> tuple[str, str]:
    """Return (the field, the reason) of a validation error: ("gate.checks.0.kind", …)."""
    text = str(exc)
    match = _WHERE.search(text)
    if match is None:
        return "", text
    path = re.sub(r"\[(\d+)\]", r".\1", match["path"])
    return path, text[: match.start()]


def salvage(model: type[_S], raw: object) -> _S:
    """Return raw as model, each field that fails the protocol's bounds reset to its default.

    Host files can be odd (a huge os-release field, a strange flake.lock): one bad field
    must not hide the others. The model's fields must all have defaults.
    """
    if not isinstance(raw, dict):
        return model()
    # Structs inside (a BootFiles, the DeployOutcome) are checked like the rest.
    given: dict[str, Any] = msgspec.to_builtins(raw)
    try:
        return msgspec.convert(given, model)  # the common case: one validation
    except msgspec.ValidationError:
        pass
    kept: dict[str, Any] = {}
    for name in model.__struct_fields__:
        if name not in given:
            continue
        try:
            msgspec.convert({name: given[name]}, model)
        except msgspec.ValidationError:
            continue
        kept[name] = given[name]
    return msgspec.convert(kept, model)
