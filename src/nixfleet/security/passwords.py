"""Password hashing with argon2id.

argon2 (and cffi under it) is loaded on the first hash or login, not at import: a dashboard
that nobody has logged in to since it started does not hold it (docs/benchmarks.md).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from argon2 import PasswordHasher


@functools.cache
def _hasher() -> PasswordHasher:
    from argon2 import PasswordHasher

    return PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Return the hash verified against when the user is unknown.

    So a wrong user name costs the same argon2 verification as a wrong password. Made on
    first use, not at import: one hash costs argon2's full memory (64 MiB) and ~0.1 s, which
    every process importing this module paid, login or not.
    """
    return _hasher().hash("nixfleet-timing-equaliser")


def hash_password(password: str) -> str:
    """Return an argon2id hash of password."""
    return _hasher().hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Return True when password matches; always spend one argon2 verification."""
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return _hasher().verify(password_hash or _dummy_hash(), password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


MIN_LENGTH = 12
MAX_LENGTH = 1024


def check_new_password(password: str) -> None:
    """Raise ValidationError unless password may be set (12 to 1024 characters)."""
    from nixfleet.core.errors import ValidationError

    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise ValidationError(f"passwords: a password has {MIN_LENGTH} to {MAX_LENGTH} characters")
