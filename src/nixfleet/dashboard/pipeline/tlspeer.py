"""The TLS client certificate of a WebSocket connection, for hosts bound to one.

Uvicorn does not fill in the ASGI TLS extension, so the WebSocket protocol is subclassed
to put the verified peer certificate into `scope["extensions"]["tls"]["client_cert_chain"]`
(the extension's own field name). Only the transport can set it; a header never does.
Behind a TLS-terminating proxy there is no peer certificate here: the proxy verifies it and
forwards it in the header named by NIXFLEET_CLIENT_CERT_HEADER, which `client_cert_sha256`
believes from a trusted proxy only (docs/security.md).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, cast

from starlette.requests import HTTPConnection
from websockets.http11 import Request

from nixfleet.dashboard.deps import request_origin
from nixfleet.dashboard.pipeline.websocket import LeanWebSocketProtocol
from nixfleet.security.clientcert import fingerprint_of_forwarded, fingerprint_of_pem


class TlsPeerWebSocketProtocol(LeanWebSocketProtocol):
    """Uvicorn's WebSocket protocol plus the ASGI TLS extension (client certificate)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._tls: dict[str, Any] | None = None
        ssl_object = cast(ssl.SSLObject | None, transport.get_extra_info("ssl_object"))
        if ssl_object is None:
            return
        der = ssl_object.getpeercert(binary_form=True)
        self._tls = {
            "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
            "tls_version": ssl_object.version(),
        }

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        # The app's task is made but has not run yet: it starts with this scope. Put into
        # the scope, not a wrapper around the app, which would live as long as the socket.
        scope = getattr(self, "scope", None)
        if self._tls is not None and scope is not None:
            scope["extensions"]["tls"] = self._tls


def client_cert_sha256(conn: HTTPConnection, header: str = "") -> str | None:
    """Return the SHA-256 fingerprint of the connection's verified client certificate.

    1. Served over TLS by uvicorn: the certificate the TLS layer verified.
    2. Behind a TLS-terminating proxy: the certificate in `header` (NIXFLEET_CLIENT_CERT_HEADER),
       believed only when the direct peer is a trusted proxy — from anyone else the header is
       ignored, or a client could name any certificate it likes.
    """
    tls = (conn.scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or []
    if chain:
        return fingerprint_of_pem(chain[0])
    forwarded = conn.headers.get(header) if header else None
    if forwarded and request_origin(conn.scope).via_proxy:
        return fingerprint_of_forwarded(forwarded)
    return None
