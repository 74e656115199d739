"""Password hashing with argon2id."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_HASHER = PasswordHasher()
# Verified against when the user is unknown, so a wrong user name costs the same time.
_DUMMY_HASH = _HASHER.hash("nixfleet-timing-equaliser")


def hash_password(password: str) -> str:
    """Return an argon2id hash of password."""
    return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Return True when password matches; always spend one argon2 verification."""
    try:
        return _HASHER.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


MIN_LENGTH = 12
MAX_LENGTH = 1024


def check_new_password(password: str) -> None:
    """Raise ValidationError unless password may be set (12 to 1024 characters)."""
    from nixfleet.core.errors import ValidationError

    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise ValidationError(f"passwords: a password has {MIN_LENGTH} to {MAX_LENGTH} characters")
