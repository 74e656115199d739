"""Time-based one-time passwords (RFC 6238) with pyotp, each code usable once.

pyotp is loaded when a code is first made or checked, not at import: most dashboards'
processes never see one (docs/benchmarks.md).
"""

from __future__ import annotations

ISSUER = "NixFleet"
PERIOD_S = 30
# One step either side forgives a phone clock that is a little off.
WINDOW = 1


def new_secret() -> str:
    """Return a fresh base32 TOTP secret (160 bits)."""
    import pyotp

    return pyotp.random_base32(32)


def provisioning_uri(secret: str, account: str) -> str:
    """Return the otpauth:// URI an authenticator app reads from the QR code."""
    import pyotp

    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=ISSUER)


def matching_step(secret: str, code: str, now: float) -> int | None:
    """Return the time step whose code equals code, or None.

    1. Refuse anything that is not exactly six digits.
    2. Try the current step and WINDOW steps either side; the caller stores the step it
       got, and refuses a step at or below the last one stored: a code works only once,
       and an older code cannot be used after a newer one.
    """
    code = code.strip().replace(" ", "")
    if len(code) != 6 or not code.isdigit():
        return None
    import pyotp

    totp = pyotp.TOTP(secret, interval=PERIOD_S)
    current = int(now // PERIOD_S)
    for step in range(current - WINDOW, current + WINDOW + 1):
        if totp.verify(code, for_time=step * PERIOD_S, valid_window=0):
            return step
    return None
