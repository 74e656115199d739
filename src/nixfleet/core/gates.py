"""The health gate of a switch ("magic rollback"): its deadline and its checks.

A gated switch is kept only when, within the deadline after activation, the agent has
reached the dashboard again (the dashboard acknowledged a line written after the switch)
and every check passed; otherwise the host's detached runner rolls back to the previous
generation by itself. The same model is the API's request field, the fleet and host
defaults, the stored column and the agent protocol's field, so its bounds exist once.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from nixfleet.core.errors import ValidationError

# A gate shorter than this could not see an agent restart; longer than an hour is a deploy
# nobody is watching any more (the switch's own hard limit is an hour).
DEADLINE_MIN_S = 1
DEADLINE_MAX_S = 3600
MAX_CHECKS = 16

CheckName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")]
# systemd's unit name alphabet, with the type suffix optional (`nginx` is `nginx.service`).
UnitName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9:_.@\\-]{1,255}$")]
# A host name or an IP literal (v6 without brackets); no spaces, no scheme.
HostName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,253}$")]
# http(s) only, printable ASCII without spaces: the runner opens it with the stdlib.
HttpUrl = Annotated[str, StringConstraints(pattern=r"^https?://[!-~]{1,2040}$")]


class _Check(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    # Shown in the reason of a rollback: "health check web: HTTP 502".
    name: CheckName | None = None


class TestsCheck(_Check):
    """The host's own `hosts/<host>/tests/T*.sh` scripts (the `test` command's), all passing."""

    kind: Literal["tests"]


class UnitCheck(_Check):
    """A systemd unit is active: `systemctl is-active --quiet UNIT`.

    The agent's `systemctl` option names the program (a stand-in where there is no
    systemd, as in the demo and the tests).
    """

    kind: Literal["unit"]
    unit: UnitName


class TcpCheck(_Check):
    """A TCP port accepts a connection."""

    kind: Literal["tcp"]
    host: HostName = "127.0.0.1"
    port: int = Field(ge=1, le=65535)


class HttpCheck(_Check):
    """An HTTP(S) URL answers 2xx (redirects are not followed: a 3xx fails)."""

    kind: Literal["http"]
    url: HttpUrl


Check = Annotated[TestsCheck | UnitCheck | TcpCheck | HttpCheck, Field(discriminator="kind")]


class HealthGate(BaseModel):
    """What a switch must show within deadline_s of its activation, or be rolled back."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    deadline_s: float = Field(120, ge=DEADLINE_MIN_S, le=DEADLINE_MAX_S)
    # Wait for the agent to reach the dashboard again (the point of a gate on a switch that
    # may break the network); a gate of checks alone turns it off.
    confirm: bool = True
    checks: list[Check] = Field(default_factory=list, max_length=MAX_CHECKS)


def choose_gate(
    kind: str,
    requested: HealthGate | None,
    off: bool,
    host_default: HealthGate | None,
    fleet_default: HealthGate | None,
) -> HealthGate | None:
    """Return the gate a new command carries: the request's, else the host's default, else
    the fleet's; none with `off`, and none for a kind that activates nothing.

    Raises ValidationError for a gate asked for on a kind that cannot carry one.
    """
    gated = kind in ("switch", "pull-switch")
    if requested is not None and (off or not gated):
        why = "with no_gate" if off else f"on {kind[:20]!r}"
        raise ValidationError(f"commands: a health gate goes with switch or pull-switch, not {why}")
    if off or not gated:
        return None
    return requested or host_default or fleet_default
