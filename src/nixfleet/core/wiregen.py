"""Write core/wire.py, the agent's light form of the protocol, from core/protocol.py.

The protocol has one definition: the pydantic models of `core.protocol` (and the health
gate of `core.gates`), which the dashboard validates every agent message with. The agent
does not load pydantic (about 12 MiB of its resident memory, docs/benchmarks.md); it reads
and writes the same messages as msgspec Structs that this module derives from those
models, field by field, bound by bound. `tests/core/test_wire_protocol.py` fails when
`core/wire.py` is not what this module renders, so the two forms cannot drift apart:

    python -m nixfleet.core.wiregen > src/nixfleet/core/wire.py

A model pydantic reads in lax mode (the health gate: "30" may stand for 30 in an API
request) is rendered strict: the agent reads only what the dashboard itself writes.
Field validators (a check written as code, such as HostMeta's reserved label keys) cannot
be carried over; the generated class names them in a comment, and the agent applies the
same rule where it builds the value (`agent/options.py`).
"""

from __future__ import annotations

import sys
import types
import typing
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from nixfleet.core import gates, protocol

# The unions a message is chosen from by one field, and that field: their members become
# tagged Structs (the tag is written first and checked on decoding).
UNIONS: tuple[tuple[str, Any, str], ...] = (
    ("Check", gates.Check, "kind"),
    ("AgentMessage", protocol.AgentMessage, "type"),
    ("DashboardMessage", protocol.DashboardMessage, "type"),
)
# pydantic refuses NaN and ±Infinity (allow_inf_nan=False); msgspec says it with bounds.
FLOAT_MAX = sys.float_info.max

HEADER = '''"""The agent protocol's messages as msgspec Structs: GENERATED, do not edit.

Rendered by `python -m nixfleet.core.wiregen > src/nixfleet/core/wire.py` from the one
definition, the pydantic models of core/protocol.py and core/gates.py; a test fails when
this file differs from what they render. The agent reads and writes these; the dashboard
validates with the models themselves.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct
'''


def _members(union: Any) -> tuple[type[BaseModel], ...]:
    """Return the models of an Annotated discriminated union."""
    inner = get_args(union)[0] if get_origin(union) is Annotated else union
    return tuple(get_args(inner))


def _tags() -> dict[type[BaseModel], tuple[str, str]]:
    """Return {model: (tag field, tag)} for every member of a tagged union."""
    tags: dict[type[BaseModel], tuple[str, str]] = {}
    for _name, union, field in UNIONS:
        for model in _members(union):
            (tag,) = get_args(model.model_fields[field].annotation)
            tags[model] = (field, tag)
    return tags


def _constraints(metadata: typing.Iterable[Any]) -> dict[str, Any]:
    """Return the bounds of pydantic metadata as msgspec Meta keywords.

    The last of two bounds of one kind wins, as in pydantic (which sets them one after
    the other in the schema it builds), even where the first was the tighter.
    """
    out: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, FieldInfo):
            out.update(_constraints(item.metadata))
            continue
        for key in ("ge", "gt", "le", "lt", "min_length", "max_length"):
            value = getattr(item, key, None)
            if value is not None:
                out[key] = value
        pattern = getattr(item, "pattern", None)
        if pattern is not None:
            out["pattern"] = _python_pattern(pattern)
    return out


def _python_pattern(pattern: str) -> str:
    """Return pattern for Python's re as pydantic's regex engine reads it.

    pydantic's `$` is the end of the text; Python's also matches before a final newline,
    so "web\\n" would pass. `\\Z` is the end in Python.
    """
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        return pattern[:-1] + "\\Z"
    return pattern


def _meta(text: str, bounds: dict[str, Any]) -> str:
    if not bounds:
        return text
    args = ", ".join(f"{k}={v!r}" for k, v in sorted(bounds.items()))
    return f"Annotated[{text}, Meta({args})]"


def render_type(tp: Any, metadata: typing.Iterable[Any] = ()) -> str:
    """Return the msgspec annotation for a pydantic annotation and its field metadata."""
    bounds = _constraints(metadata)
    origin = get_origin(tp)
    if origin is Annotated:
        base, *extra = get_args(tp)
        return render_type(base, [*metadata, *extra])
    if origin in (Union, types.UnionType):
        return " | ".join(render_type(arg) for arg in get_args(tp))
    if origin is Literal:
        return f"Literal[{', '.join(repr(a) for a in get_args(tp))}]"
    if origin is list:
        return _meta(f"list[{render_type(get_args(tp)[0])}]", bounds)
    if origin is dict:
        key, value = (render_type(a) for a in get_args(tp))
        return _meta(f"dict[{key}, {value}]", bounds)
    if tp is type(None):
        return "None"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp.__name__
    if tp is float:
        bounds.setdefault("ge", -FLOAT_MAX)
        bounds.setdefault("le", FLOAT_MAX)
    if tp in (bool, int, float, str):
        return _meta(tp.__name__, bounds)
    raise TypeError(f"wiregen: no msgspec form for {tp!r}")


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        made = field.default_factory()  # type: ignore[call-arg]
        if made not in ([], {}):
            raise TypeError("wiregen: only an empty list or dict may be a default factory")
        return f" = {made!r}"
    if field.default is PydanticUndefined:
        return ""
    return f" = {field.default!r}"


def render_model(model: type[BaseModel], tags: dict[type[BaseModel], tuple[str, str]]) -> str:
    """Return the Struct class of one model."""
    options = ["Struct", "kw_only=True", "frozen=True"]
    if model.model_config.get("extra") == "forbid":
        options.append("forbid_unknown_fields=True")
    tag_field, tag = tags.get(model, ("", ""))
    if tag_field:
        options += [f"tag_field={tag_field!r}", f"tag={tag!r}"]
    lines = [f"class {model.__name__}({', '.join(options)}):"]
    if model.__doc__:
        lines.append(f'    """{model.__doc__.strip()}"""')
    decorators = model.__pydantic_decorators__
    checks = [*decorators.field_validators, *decorators.model_validators]
    if checks:
        lines.append(f"    # Checked by the dashboard only (core.protocol): {', '.join(checks)}.")
    hidden = []
    for name, field in model.model_fields.items():
        if name == tag_field:
            continue
        if len(lines) == 2 and model.__doc__:
            lines.append("")
        if field.description:
            lines.append(f"    # {field.description}")
        lines.append(
            f"    {name}: {render_type(field.annotation, field.metadata)}{_default(field)}"
        )
        if not field.repr:
            hidden.append(name)
    if hidden:
        shown = [n for n in model.model_fields if n not in hidden and n != tag_field]
        parts = ", ".join(f"{n}={{self.{n}!r}}" for n in shown)
        text = f'f"{model.__name__}({parts})"' if shown else f'"{model.__name__}()"'
        lines += [
            "",
            f"    def __repr__(self) -> str:  # {', '.join(hidden)}: a secret, never shown",
            f"        return {text}",
        ]
    return "\n".join(lines)


def _models() -> list[type[BaseModel]]:
    """Return every model the unions reach, each after the models its fields use."""
    seen: list[type[BaseModel]] = []

    def visit(tp: Any) -> None:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp in seen:
                return
            for field in tp.model_fields.values():
                visit(field.annotation)
            seen.append(tp)
            return
        for arg in get_args(tp):
            visit(arg)

    for _name, union, _field in UNIONS:
        visit(union)
    return seen


def render() -> str:
    """Return the text of core/wire.py."""
    tags = _tags()
    parts = [HEADER]
    parts += [render_model(m, tags) for m in _models()]
    for name, union, _field in UNIONS:
        parts.append(f"{name} = {' | '.join(m.__name__ for m in _members(union))}")
    return "\n\n\n".join(parts) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
