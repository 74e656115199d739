"""Client certificates: the SHA-256 fingerprint a host can be bound to."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import ssl
from urllib.parse import unquote

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


def fingerprint_of_forwarded(value: str) -> str | None:
    """Return the SHA-256 of a client certificate a TLS-terminating proxy forwarded.

    Accepts the forms the common proxies send: URL-encoded PEM (nginx
    `$ssl_client_escaped_cert`, Caddy), plain PEM, and base64 DER without PEM armour
    (Traefik `passTLSClientCert`). Returns None for anything else.
    """
    text = unquote(value.strip())
    try:
        if "BEGIN CERTIFICATE" in text:
            return fingerprint_of_pem(text)
        der = base64.b64decode(text.split(",")[0], validate=True)
    except (ValueError, binascii.Error):
        return None
    return hashlib.sha256(der).hexdigest() if der.startswith(b"\x30") else None
