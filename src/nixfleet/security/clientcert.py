"""Client certificates: the SHA-256 fingerprint a host can be bound to."""

from __future__ import annotations

import hashlib
import re
import ssl

from nixfleet.core.errors import ValidationError

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def fingerprint_of_pem(pem: str) -> str:
    """Return the lowercase hex SHA-256 of a PEM certificate's DER bytes."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def parse_fingerprint(text: str) -> str:
    """Return a fingerprint in canonical form (64 lowercase hex digits, no colons).

    Accepts the `AA:BB:…` form `openssl x509 -fingerprint -sha256` prints.
    """
    value = text.strip().lower().removeprefix("sha256:").removeprefix("sha256 fingerprint=")
    value = value.replace(":", "")
    if not _HEX64.match(value):
        raise ValidationError("tls: a client certificate fingerprint is 64 hex digits (SHA-256)")
    return value
