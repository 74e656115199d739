"""The demo's stand-in for each simulated host's network: a loopback relay per host to the
dashboard that honours the host's running system's firewall.

A demo host has no network of its own, so its agent reaches the dashboard through its
relay. While the host's running system (`current-system`) has `etc/firewall/drop-outgoing`
(`networking.firewall.dropOutgoing = true`, or the demo's BREAK_NETWORK file), the relay
refuses new connections and cuts open ones before another byte passes, as a firewall that
drops outgoing traffic would. Switching to such a system cuts the agent off; rolling back
lets it through again. That is what a health-gated switch must survive on its own.

Run as `python -m nixfleet.demo.network PORT_FILE DASHBOARD_PORT SYSTEM_DIR...`: it writes
{system dir: relay port} to PORT_FILE and relays until SIGTERM, one line per cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path

DROP = Path("current-system/etc/firewall/drop-outgoing")
_WATCH_S = 0.05  # how soon an open connection is cut after the system changed
_CHUNK = 65536


class Relay:
    """One host's relay: loopback port → the dashboard, unless the firewall drops it."""

    def __init__(self, system_dir: Path, upstream: int) -> None:
        self.system_dir = system_dir
        self.upstream = upstream
        self.name = system_dir.parent.name

    def blocked(self) -> bool:
        return (self.system_dir / DROP).exists()

    def note(self, what: str) -> None:
        print(f"network stand-in: {self.name}: {what} (firewall: drop outgoing)", flush=True)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.blocked():
            self.note("refused a connection to the dashboard")
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.close()
            return
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
            asyncio.create_task(self._watch()),
        ]
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for task in pipes:
            task.cancel()
        for w in (writer, up_writer):
            w.close()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(_CHUNK):
                # Checked before each chunk too: no byte passes once the system drops them,
                # however soon after the switch it was sent.
                if self.blocked():
                    self.note("cut the agent's connection to the dashboard")
                    return
                dst.write(data)
                await dst.drain()

    async def _watch(self) -> None:
        # A file has no portable change event (no inotify on macOS without a dependency).
        while True:
            if self.blocked():
                self.note("cut the agent's connection to the dashboard")
                return
            await asyncio.sleep(_WATCH_S)


async def serve(port_file: Path, upstream: int, system_dirs: list[Path]) -> None:
    """Relay for each system dir until SIGTERM; the ports are written to port_file."""
    ports: dict[str, int] = {}
    servers = []
    for system_dir in system_dirs:
        relay = Relay(system_dir, upstream)
        server = await asyncio.start_server(relay.handle, "127.0.0.1", 0)
        servers.append(server)
        ports[str(system_dir)] = int(server.sockets[0].getsockname()[1])
    tmp = port_file.with_name(port_file.name + ".tmp")
    tmp.write_text(json.dumps(ports))
    tmp.replace(port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


def main() -> None:
    port_file, upstream, *dirs = sys.argv[1:]
    asyncio.run(serve(Path(port_file), int(upstream), [Path(d) for d in dirs]))


if __name__ == "__main__":
    main()
