"""Loopback servers for transport tests: each records what it receives and when."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field

import trustme

from nixfleet.security.tls import cert_der_from_file, spki_pin


def pin_of(cert: trustme.LeafCert) -> str:
    """Return the --pin value for a trustme certificate's key."""
    return spki_pin(cert_der_from_file(cert.cert_chain_pems[0].bytes()))


def server_context(cert: trustme.LeafCert, max_tls: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    if max_tls is not None:
        ctx.maximum_version = max_tls
    return ctx


@dataclass
class Recorder:
    """A TLS (or plain) server that records every byte received after the handshake.

    `reply` is sent after the first bytes arrive (e.g. an HTTP 401), then the connection
    is closed; without a reply it reads until the client closes.
    """

    ctx: ssl.SSLContext | None
    reply: bytes = b""
    connections: int = 0
    handshakes: int = 0
    closed: int = 0
    attempts: list[float] = field(default_factory=list)
    received: bytes = b""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.attempts.append(time.monotonic())
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            if self.ctx is not None:
                conn = self.ctx.wrap_socket(conn, server_side=True)
            with self.lock:
                self.handshakes += 1
            while chunk := conn.recv(65536):
                with self.lock:
                    self.received += chunk
                if self.reply and b"\r\n\r\n" in chunk:
                    conn.sendall(self.reply)
                    break
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()
            with self.lock:
                self.closed += 1

    def close(self) -> None:
        self._stop = True
        self.sock.close()


class TLSProxy:
    """A TLS front for a plain dashboard; its certificate can be swapped while it runs."""

    def __init__(self, ctx: ssl.SSLContext, backend_port: int) -> None:
        self.backend_port = backend_port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: asyncio.Server | None = None
        self.port = 0
        self.set_context(ctx)

    def set_context(self, ctx: ssl.SSLContext) -> None:
        asyncio.run_coroutine_threadsafe(self._listen(ctx), self.loop).result(10)

    async def _listen(self, ctx: ssl.SSLContext) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=ctx)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            b_reader, b_writer = await asyncio.open_connection("127.0.0.1", self.backend_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            _pump(reader, b_writer), _pump(b_reader, writer), return_exceptions=True
        )

    def close(self) -> None:
        async def stop() -> None:
            if self.server is not None:
                self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    finally:
        writer.close()


def pinned_agent_args(proxy: TLSProxy, ca_file, pin: str) -> list[str]:
    """Return the agent flags for dialling through proxy with a CA file and one pin, retrying
    on a fast loopback schedule (one probe a second once the breaker opens)."""
    return [
        "--url",
        f"https://127.0.0.1:{proxy.port}",
        "--ca-file",
        str(ca_file),
        "--pin",
        pin,
        "--backoff-floor",
        "0.05",
        "--backoff-cap",
        "0.3",
        "--probe-interval",
        "1",
        "--log-level",
        "info",
    ]
