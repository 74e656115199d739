"""The timing equaliser: an unknown user costs one full argon2 verification, made lazily."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from argon2 import PasswordHasher

from nixfleet.security import passwords


class CountingHasher:
    """The real hasher, counting the verifications and the hashes they were made against."""

    def __init__(self) -> None:
        self.real = PasswordHasher()
        self.verified: list[str] = []

    def verify(self, hash_: str, password: str) -> Any:
        self.verified.append(hash_)
        return self.real.verify(hash_, password)

    def hash(self, password: str) -> str:
        return self.real.hash(password)


def test_unknown_user_still_costs_one_full_verification(monkeypatch: pytest.MonkeyPatch) -> None:
    hasher = CountingHasher()
    monkeypatch.setattr(passwords, "_hasher", lambda: hasher)
    passwords._dummy_hash.cache_clear()
    known = hasher.hash("right")
    hasher.verified.clear()

    assert passwords.verify_password(None, "nixfleet-timing-equaliser") is False
    assert passwords.verify_password(None, "guess") is False
    assert passwords.verify_password(known, "wrong") is False
    assert passwords.verify_password(known, "right") is True

    assert len(hasher.verified) == 4  # every attempt, known user or not, ran argon2
    dummy = hasher.verified[0]
    assert dummy.startswith("$argon2id$") and dummy != known
    # The dummy is made with the same cost as a stored hash, so it takes as long to check.
    assert not hasher.real.check_needs_rehash(dummy)
    assert dummy.split("$")[3] == known.split("$")[3]  # m=…,t=…,p=…
    passwords._dummy_hash.cache_clear()


def test_importing_the_module_computes_no_hash() -> None:
    code = (
        "import argon2\n"
        "calls = []\n"
        "real = argon2.PasswordHasher.hash\n"
        "argon2.PasswordHasher.hash = lambda self, p: calls.append(p) or real(self, p)\n"
        "from nixfleet.security import passwords\n"
        "assert calls == [], calls\n"
        "passwords.verify_password(None, 'x')\n"
        "assert len(calls) == 1, calls\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
