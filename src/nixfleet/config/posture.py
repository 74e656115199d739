"""The security posture of a configuration: what is on, what is weak (`nixfleet admin check`)."""

from __future__ import annotations

from typing import Literal

from nixfleet.config.settings import Settings

Status = Literal["ok", "weak", "info"]
_LOOPBACK = ("127.", "::1", "localhost")


def posture(settings: Settings) -> list[tuple[Status, str]]:
    """Return one (status, line) per property, secrets first; never a secret's value."""
    lines: list[tuple[Status, str]] = [("weak", p) for p in settings.weak_secrets()]
    if not lines:
        count = len(settings.session_secrets)
        lines.append(("ok", "admin password: argon2 hash set"))
        lines.append(("ok", f"session secrets: {count} (the first signs, all verify)"))
        lines.append(("ok", "agent token hash secret: set"))
    lines += _login(settings)
    lines += _transport(settings)
    lines.append(
        ("info", f"request bodies: at most {settings.max_body_bytes} bytes"),
    )
    return lines


def _login(settings: Settings) -> list[tuple[Status, str]]:
    lines: list[tuple[Status, str]] = []
    if settings.totp_secret.get_secret_value():
        required = " (required: start-up refuses to run without it)" * settings.require_totp
        lines.append(("ok", f"TOTP second factor: on{required}"))
    else:
        lines.append(("weak", "TOTP second factor: off (`nixfleet admin totp-setup`)"))
    lines.append(
        (
            "ok",
            f"login throttling: {settings.login_free_failures} free failures per address and "
            f"per account, then {settings.login_base_delay_s:g} s doubling up to "
            f"{settings.login_max_delay_s:g} s",
        )
    )
    idle_h, absolute_h = settings.session_idle_s / 3600, settings.session_absolute_s / 3600
    status: Status = "ok" if idle_h <= 24 and absolute_h <= 30 * 24 else "weak"
    lines.append((status, f"session expiry: idle {idle_h:g} h, absolute {absolute_h:g} h"))
    return lines


def _transport(settings: Settings) -> list[tuple[Status, str]]:
    lines: list[tuple[Status, str]] = []
    if settings.secure_cookies:
        lines.append(("ok", "cookies: Secure, HttpOnly, SameSite=Strict, __Host- prefix; HSTS"))
    else:
        lines.append(("weak", "cookies: not Secure and no HSTS (plain-HTTP demo setting)"))
    if settings.demo:
        lines.append(("weak", "demo mode: secrets are not checked at start-up"))
    loopback = settings.host.startswith(_LOOPBACK)
    lines.append(("info", f"listening on {settings.host}" + " (loopback only)" * loopback))
    if not loopback and not settings.secure_cookies:
        lines.append(("weak", "reachable beyond loopback with plain-HTTP cookies"))
    return lines
