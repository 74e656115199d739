"""TLS for the agent: client contexts, SPKI pins, and names for handshake failures.

A pin is `sha256/<base64 of SHA-256 over the DER SubjectPublicKeyInfo>` (the HPKP form,
the same string `openssl x509 -pubkey | openssl pkey -pubin -outform der | openssl dgst
-sha256 -binary | base64` gives). Pinning the key rather than the certificate survives a
renewal with the same key; a second pin lets a backup key be pinned before a rotation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import ssl
from enum import StrEnum
from pathlib import Path

from nixfleet.core.errors import ConfigError

MIN_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_PIN = re.compile(r"^sha256/([A-Za-z0-9+/]{43}=)$")


class TLSFailure(StrEnum):
    """Why a handshake failed, as a short machine word (logged, counted, reported)."""

    UNKNOWN_CA = "unknown_ca"
    PIN_MISMATCH = "pin_mismatch"
    PROTOCOL_VERSION = "protocol_version"
    HOSTNAME_MISMATCH = "hostname_mismatch"
    EXPIRED = "expired"
    OTHER = "handshake_failed"


class PinMismatch(ssl.SSLError):
    """The server's key matches none of the configured pins."""

    def __str__(self) -> str:
        return "the server's public key matches no configured --pin"


def client_context(
    ca_file: Path | None,
    min_tls: str = "1.2",
    client_cert: Path | None = None,
    client_key: Path | None = None,
) -> ssl.SSLContext:
    """Return a verifying client context, presenting client_cert when given (mTLS).

    With ca_file only that bundle is trusted (the system roots are not loaded), so a
    certificate from any public CA is refused. Without it the system roots are used.
    """
    if min_tls not in MIN_VERSIONS:
        raise ConfigError(f"agent: --min-tls must be one of {', '.join(MIN_VERSIONS)}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED
    ctx.minimum_version = MIN_VERSIONS[min_tls]
    if ca_file is None:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        try:
            ctx.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"agent: --ca-file {ca_file}: cannot load it ({exc})") from None
    if client_cert is not None:
        try:
            ctx.load_cert_chain(client_cert, client_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"agent: --client-cert {client_cert}: cannot load it or its key ({exc})"
            ) from None
    return ctx


def parse_pin(text: str) -> str:
    """Return a pin in canonical form, or raise ConfigError naming the expected shape."""
    match = _PIN.match(text.strip())
    if match is None:
        raise ConfigError(f"agent: pin {text!r} is not of the form sha256/<44 base64 chars>")
    try:
        base64.b64decode(match.group(1), validate=True)
    except binascii.Error:
        raise ConfigError(f"agent: pin {text!r} is not valid base64") from None
    return match.group(0)


def spki_pin(cert_der: bytes) -> str:
    """Return the pin of a DER certificate's public key."""
    # cryptography is imported where a pin is checked, not by every agent (~4 MiB).
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = x509.load_der_x509_certificate(cert_der).public_key()
    spki = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return "sha256/" + base64.b64encode(hashlib.sha256(spki).digest()).decode()


def cert_der_from_file(data: bytes) -> bytes:
    """Return the first certificate of a PEM file (or the bytes of a DER one) as DER."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    if b"-----BEGIN CERTIFICATE-----" in data:
        return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
    return x509.load_der_x509_certificate(data).public_bytes(Encoding.DER)


def check_pin(cert_der: bytes | None, pins: frozenset[str]) -> None:
    """Raise PinMismatch unless pins is empty or the certificate's key matches one."""
    if not pins:
        return
    if cert_der is None or spki_pin(cert_der) not in pins:
        raise PinMismatch()


def classify(exc: BaseException) -> TLSFailure | None:
    """Return why a handshake failed, or None when exc is no TLS failure."""
    if isinstance(exc, PinMismatch):
        return TLSFailure.PIN_MISMATCH
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _VERIFY_CODES.get(getattr(exc, "verify_code", 0), TLSFailure.UNKNOWN_CA)
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "").upper()
        if "VERSION" in reason or "UNSUPPORTED_PROTOCOL" in reason:
            return TLSFailure.PROTOCOL_VERSION
        return TLSFailure.OTHER
    return None


# OpenSSL's X509_V_ERR_* codes (stable across versions).
_VERIFY_CODES = {
    9: TLSFailure.EXPIRED,  # certificate is not yet valid: a clock problem, same remedy
    10: TLSFailure.EXPIRED,
    18: TLSFailure.UNKNOWN_CA,
    19: TLSFailure.UNKNOWN_CA,
    20: TLSFailure.UNKNOWN_CA,
    21: TLSFailure.UNKNOWN_CA,
    62: TLSFailure.HOSTNAME_MISMATCH,
    64: TLSFailure.HOSTNAME_MISMATCH,  # IP address mismatch
}
