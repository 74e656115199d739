"""The agent daemon: startup → run → shutdown.

It dials out to the dashboard (so it works behind NAT), says hello with what it knows,
replays whatever the dashboard has not acknowledged, then heartbeats, runs commands and
streams output until the connection drops; then it backs off and dials again
(`agent.transport`: TLS, pins, backoff, circuit breaker).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import WebSocketException

from nixfleet import __version__
from nixfleet.agent import codec, status
from nixfleet.agent.deployment import DeployRecord
from nixfleet.agent.executors import Target, gate_plan, make_executor
from nixfleet.agent.journal import Entry, Journal
from nixfleet.agent.options import AgentOptions
from nixfleet.agent.preview import preview
from nixfleet.agent.ratelimit import TokenBucket
from nixfleet.agent.runner import Runner
from nixfleet.agent.transport import Backoff, Transport
from nixfleet.core.branch import check_branch
from nixfleet.core.commands import DEPLOYING, KIND_RULES, CommandKind
from nixfleet.core.errors import ConfigError
from nixfleet.core.framing import PROTOCOL_VERSION
from nixfleet.core.hostid import canonical_host_id
from nixfleet.core.wire import (
    Ack,
    Cancel,
    Command,
    Credential,
    CredentialSaved,
    DeployOutcome,
    Finished,
    Hello,
    HostStatus,
    Output,
    PlanReport,
    Started,
    Status,
    StatusAck,
    Welcome,
)

log = logging.getLogger("nixfleet.agent")

# systemd and launchd stop the agent with SIGTERM and expect it gone within seconds: a
# connected session gets this long to send its close frame, anything else is cancelled.
STOP_GRACE_S = 0.5

__all__ = ["Agent", "AgentOptions", "Backoff", "run_agent"]


class Agent:
    def __init__(self, opts: AgentOptions) -> None:
        self.opts = opts
        self.host_id = canonical_host_id(opts.host_id)
        check_branch(opts.branch)
        self.transport = Transport(opts.url, opts.transport)
        self.ws_url = self.transport.url
        self.token = ""
        self.heartbeat_s = 15.0
        self.wake = asyncio.Event()
        self.stopping = asyncio.Event()
        self.restart_requested = False
        self.executor = make_executor(opts.os, opts.macos_tool, opts.systemd_run)
        profile = opts.system_profile or _default_profile(self.executor.tool)
        self.target = Target(
            self.host_id, opts.repo_dir, opts.branch, opts.state_dir / "plans", profile
        )
        self.runner = Runner(
            Journal(opts.state_dir),
            self.executor,
            self.target,
            self.wake.set,
            opts.rules,
            self._finished,
        )
        self.paths = status.SystemPaths(
            opts.os,
            self.executor.tool,
            opts.system_dir,
            profile,
            opts.macos_version_file,
        )
        self.record = DeployRecord(opts.state_dir)
        self.revisions = status.Revisions()
        self.bucket = TokenBucket(*opts.command_rate, path=opts.state_dir / "command-rate.json")

    # --- lifecycle ------------------------------------------------------------------
    async def startup(self) -> None:
        """Get the token (from its file, or by enrolling), make sure our clone exists,
        re-attach to journalled commands."""
        self.token = self._read_token()
        if not self.token and self.opts.enroll_code:
            await self._enroll()
        if not self.token:
            raise ConfigError(
                f"agent: no token in {self.opts.token_file}; pass --enroll-code-file to enroll"
            )
        if self.opts.token_file.stat().st_mode & 0o077:
            log.warning("agent: %s is readable by other users; chmod 600 it", self.opts.token_file)
        if not (self.opts.repo_dir / ".git").exists() and self.opts.repo_url:
            await self._clone()
        self.runner.reattach()
        if not self.transport.secure:
            log.warning(
                "agent: INSECURE: --allow-insecure sends the token and every command in plain "
                "text to %s; use it only on loopback",
                self.ws_url,
            )

    async def _clone(self) -> None:
        """Clone the config repo into repo_dir (a child process, so a stop can kill it)."""
        proc = await asyncio.create_subprocess_exec(
            *("git", "clone", "--branch", self.opts.branch, "--"),
            *(self.opts.repo_url, str(self.opts.repo_dir)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            _, err = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
        if proc.returncode != 0:
            last = (err.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
            raise ConfigError(f"agent: cannot clone {self.opts.repo_url}: {last[:200]}")

    async def serve(self) -> None:
        """Start up, then run until stopped."""
        await self.startup()
        await self.run()

    async def run(self) -> None:
        """Connect, serve, and reconnect with backoff until asked to stop."""
        while not self.stopping.is_set():
            ended: BaseException = ConnectionError("the dashboard ended the session")
            try:
                await self._session()
            except (TimeoutError, OSError, WebSocketException) as exc:
                ended = exc  # ssl.SSLError (and so a pin mismatch) is an OSError
            if self.restart_requested or self.stopping.is_set():
                return
            delay = self.transport.failed(ended)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)

    async def shutdown(self) -> None:
        """Stop following commands; they keep running detached and are re-attached later."""
        self.stopping.set()
        await self.runner.close()

    # --- credentials ----------------------------------------------------------------
    def _read_token(self) -> str:
        """Return the token in the token file, or "" when there is none yet."""
        try:
            return self.opts.token_file.read_text().strip()
        except FileNotFoundError:
            return ""

    def _save_token(self, token: str) -> None:
        """Write the token file atomically, readable by this user only (0600)."""
        path = self.opts.token_file
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self.token = token

    async def _enroll(self) -> None:
        """Exchange the one-time enrollment code for this host's token, and store it.

        The dashboard may not be up yet, so unreachable means retry with backoff; a
        refused code is final (it is wrong, used or expired: ask for a new one).
        """
        url = self.opts.url.replace("wss://", "https://").replace("ws://", "http://")
        url = url.rstrip("/") + "/api/agent/enroll"
        body = {"host_id": self.host_id, "code": self.opts.enroll_code}
        # httpx is imported only to enroll: importing it loads rich, pygments and click
        # (its command-line entry point), several MiB that an enrolled agent never uses.
        import httpx

        # The one-time code travels under the same CA and minimum TLS version as the token.
        verify: ssl.SSLContext | bool = self.transport.ssl or True
        async with httpx.AsyncClient(verify=verify, timeout=10) as http:
            while not self.stopping.is_set():
                try:
                    res = await http.post(url, json=body)
                except httpx.HTTPError as exc:
                    log.info("agent: enrollment: cannot reach dashboard: %s", type(exc).__name__)
                    await asyncio.sleep(self.transport.backoff.next_delay())
                    continue
                if res.status_code != 200:
                    raise ConfigError(
                        f"agent: enrollment refused (HTTP {res.status_code}): the code is "
                        "wrong, used or expired; issue a new one"
                    )
                self._save_token(str(res.json()["agent_token"]))
                self.transport.backoff.reset()
                log.info("agent: enrolled; token stored in %s", self.opts.token_file)
                return

    async def _on_credential(self, ws: ClientConnection, msg: Credential) -> None:
        """Store the per-host token the dashboard issued in place of the shared one.

        Only a stored token is acknowledged: until then the dashboard keeps the host on
        the shared token, so a read-only token file cannot lock the agent out.
        """
        try:
            self._save_token(msg.token)
        except OSError as exc:
            log.error("agent: cannot store the new token in %s: %s", self.opts.token_file, exc)
            return
        await ws.send(codec.encode(CredentialSaved()))
        log.warning(
            "agent: the dashboard replaced the shared token with this host's own; saved to %s",
            self.opts.token_file,
        )

    # --- one connection -------------------------------------------------------------
    async def _session(self) -> None:
        # Re-read each time, so a token file replaced by hand (rotation) takes effect.
        self.token = self._read_token() or self.token
        headers = {"Authorization": f"Bearer {self.token}", "X-NixFleet-Host": self.host_id}
        async with self.transport.dial(headers) as ws:
            await ws.send(
                codec.encode(
                    Hello(
                        protocol=PROTOCOL_VERSION,
                        host_id=self.host_id,
                        agent_version=__version__,
                        status=await self._status(),
                        known_commands=list(self.runner.entries),
                        meta=self.opts.meta,
                        transport=self.transport.report(),
                    )
                )
            )
            welcome = codec.read_dashboard(await asyncio.wait_for(ws.recv(), 10))
            if not isinstance(welcome, Welcome):
                return
            self.heartbeat_s = welcome.heartbeat_s
            self.transport.established()
            log.info("agent: connected to %s", self.ws_url)
            tasks = [
                asyncio.create_task(c)
                for c in (
                    self._receive(ws),
                    self._heartbeat(ws),
                    self._flush(ws),
                    self._wait_stop(ws),
                )
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    t.result()
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _wait_stop(self, ws: ClientConnection) -> None:
        await self.stopping.wait()
        await ws.close()

    async def _status(self) -> HostStatus:
        return await status.collect(self.paths, self.opts.repo_dir, self.record, self.revisions)

    # --- what a finished command leaves behind ----------------------------------------
    async def _finished(self, entry: Entry, record: dict[str, object]) -> PlanReport | None:
        """Record a switch's outcome; turn a plan's build into its report."""
        kind = CommandKind(entry.kind)
        if kind in DEPLOYING:
            await self._note_deploy(entry, record)
        if kind in DEPLOYING or kind == CommandKind.ROLLBACK:
            record["change"] = await self._change(entry)
        elif kind == CommandKind.PLAN and record.get("result") == "succeeded":
            built = status.resolve(self.target.work_dir / entry.command_id / "result")
            if not built:
                raise RuntimeError("agent: the plan's build left no result")
            self._prune_plans(keep=entry.command_id)
            ref = f"refs/remotes/origin/{self.opts.branch}"
            return await preview(self.paths, built, await status.git_head(self.opts.repo_dir, ref))
        return None

    async def _change(self, entry: Entry) -> dict[str, object]:
        """Return the generation and commit before (noted at the start) and after entry:
        its from → to in the host's history."""
        note = _plan_note(entry)
        before = note.get("generation_before", "")
        now = await self._status()
        return {
            "before": {
                "generation": int(before) if before.isdigit() else None,
                "commit": note.get("commit_before", ""),
            },
            "after": {"generation": now.generation, "commit": now.deployed_commit},
        }

    async def _note_deploy(self, entry: Entry, record: dict[str, object]) -> None:
        """Remember how a switch ended and, when it activated a system, which commit that is.

        A failed switch may still have activated its system (a unit that failed to start
        fails the switch after activation), so "activated" is read from the links.
        """
        before = _plan_note(entry).get("system_before", "")
        current = self.paths.current()
        result = str(record.get("result", "failed"))
        activated = bool(current) and (result == "succeeded" or current != before)
        commit = await status.git_head(self.opts.repo_dir) if activated else ""
        finished_at = record.get("finished_at")
        outcome = codec.convert(
            DeployOutcome,
            {
                "command_id": entry.command_id,
                "kind": entry.kind,
                "result": result if result in _DEPLOY_RESULTS else "failed",
                "finished_at": finished_at if isinstance(finished_at, float) else time.time(),
                "detail": str(record.get("detail", ""))[:2000],
            },
        )
        self.record.note(outcome, current if activated else "", commit)

    def _prune_plans(self, keep: str) -> None:
        """Drop older plans' results (garbage-collector roots) but the newest two."""
        older = sorted(
            (p for p in self.target.work_dir.iterdir() if p.name != keep),
            key=lambda p: p.stat().st_mtime,
        )
        for path in older[:-1]:
            shutil.rmtree(path, ignore_errors=True)

    async def _heartbeat(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            await ws.send(codec.encode(Status(status=await self._status())))

    async def _flush(self, ws: ClientConnection) -> None:
        """Send every unacknowledged line and result; on a new connection, from the start."""
        sent: dict[str, int] = {}
        finished_sent: set[str] = set()
        while True:
            self.wake.clear()
            while self.runner.warnings:
                await ws.send(codec.encode(self.runner.warnings.pop(0)))
            for cid, entry in list(self.runner.entries.items()):
                # Batches by bytes under the limit both sides agree on (core.framing),
                # read from the journal one at a time: nothing waits in memory.
                while batch := entry.batch_after(max(sent.get(cid, 0), entry.acked_seq)):
                    await ws.send(codec.encode(Output(command_id=cid, lines=batch)))
                    sent[cid] = batch[-1].seq
                if entry.finished is not None and cid not in finished_sent:
                    await ws.send(codec.encode(entry.finished))
                    finished_sent.add(cid)
                    # What the command changed (system, generation, checkout) shows at once.
                    await ws.send(codec.encode(Status(status=await self._status())))
            await self.wake.wait()

    async def _receive(self, ws: ClientConnection) -> None:
        async for raw in ws:
            try:
                msg = codec.read_dashboard(raw)
            except codec.Unreadable as exc:
                await self._unreadable(ws, raw, exc)
                continue
            if isinstance(msg, Ack):
                self.runner.acknowledge(msg.command_id, msg.seq, msg.final)
            elif isinstance(msg, Cancel):
                if not self.runner.cancel(msg.command_id):
                    log.info("agent: cancel for %s: not running here", msg.command_id)
            elif isinstance(msg, Command):
                await self._on_command(ws, msg)
            elif isinstance(msg, Credential):
                await self._on_credential(ws, msg)
            elif isinstance(msg, StatusAck):
                pass

    async def _unreadable(self, ws: ClientConnection, raw: str | bytes, exc: Exception) -> None:
        """Refuse a command this agent cannot read (a newer dashboard's gate, say) by its
        id; anything else unreadable is logged and skipped. Neither ends the session."""
        where, reason = codec.where(exc)
        where, reason = where[:80], reason[:300] or "invalid"
        try:
            data = json.loads(raw)
            command_id = str(data["command_id"]) if data.get("type") == "command" else ""
            refusal = Finished(
                command_id=command_id,
                result="rejected",
                exit_code=None,
                duration_s=0,
                last_seq=0,
                detail=f"agent: this agent cannot read the command ({where}: {reason})",
            )
            reply = codec.encode(refusal)  # a command id out of bounds cannot be refused by it
        except (ValueError, TypeError, KeyError, AttributeError):  # codec.Invalid too
            log.warning("agent: ignoring an unreadable message from the dashboard (%s)", where)
            return
        log.warning("agent: refused command %s: cannot read %s", command_id, where)
        await ws.send(reply)

    async def _on_command(self, ws: ClientConnection, msg: Command) -> None:
        def refuse(detail: str) -> Finished:
            return Finished(
                command_id=msg.command_id,
                result="rejected",
                exit_code=None,
                duration_s=0,
                last_seq=0,
                detail=detail,
            )

        try:
            kind = CommandKind(msg.kind)
        except ValueError:
            await ws.send(codec.encode(refuse(f"agent: unknown command {msg.kind!r}")))
            return
        if msg.command_id in self.runner.entries:
            return  # a replay of a command we already run: the journal answers for it
        if msg.expires_at is not None and msg.expires_at < time.time():
            await ws.send(codec.encode(refuse("agent: command expired before it arrived")))
        elif kind == CommandKind.RESTART:
            restarting = Finished(
                command_id=msg.command_id,
                result="succeeded",
                exit_code=0,
                duration_s=0,
                last_seq=0,
                detail="agent restarting",
            )
            await ws.send(codec.encode(restarting))
            self.restart_requested = True
            await ws.close()
        elif not KIND_RULES[kind].runs_process:
            await ws.send(codec.encode(refuse(f"agent: {kind} is not run as a process")))
        elif self.runner.busy():
            await ws.send(codec.encode(refuse("agent: another command is running")))
        elif not self.bucket.take():
            n, per = self.opts.command_rate
            log.warning("agent: refused command %s: over %d per %g s", msg.command_id, n, per)
            await ws.send(
                codec.encode(
                    refuse(
                        f"rate limited: at most {n} commands per {per:g} s; "
                        f"next in {self.bucket.retry_after():.0f} s"
                    )
                )
            )
        else:
            gate = None
            if msg.gate is not None:
                gate = gate_plan(
                    self.executor, self.target, msg.gate, [self.opts.systemctl], self.paths.profile
                )
            now = await self._status()
            note = {
                "system_before": self.paths.current(),
                "generation_before": "" if now.generation is None else str(now.generation),
                "commit_before": now.deployed_commit,
            }
            entry = self.runner.start(msg.command_id, kind, note, gate, msg.generation)
            started = Started(command_id=msg.command_id, started_at=entry.started_at)
            await ws.send(codec.encode(started))


_DEPLOY_RESULTS = ("succeeded", "cancelled", "timed_out", "rolled_back")


def _default_profile(tool: str) -> Path:
    if tool == "home-manager":
        return Path.home() / ".local/state/nix/profiles/home-manager"
    return Path("/nix/var/nix/profiles/system")


def _plan_note(entry: Entry) -> dict[str, str]:
    """Return what the agent noted in a command's plan when it started it."""
    try:
        note = json.loads((entry.path / "plan.json").read_text()).get("agent_note", {})
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in note.items()} if isinstance(note, dict) else {}


def _install_signals(agent: Agent) -> None:
    loop = asyncio.get_running_loop()
    count = {"n": 0}

    def handler() -> None:
        count["n"] += 1
        if count["n"] > 1:
            os._exit(130)  # a second signal forces the exit
        agent.stopping.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handler)


async def _main(opts: AgentOptions) -> bool:
    agent = Agent(opts)
    _install_signals(agent)
    try:
        work = asyncio.create_task(agent.serve())
        stop = asyncio.create_task(agent.stopping.wait())
        await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        await _finish(work)
    finally:
        await agent.shutdown()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().remove_signal_handler(sig)
    return agent.restart_requested


async def _finish(work: asyncio.Task[None]) -> None:
    """Return when work has ended, within about STOP_GRACE_S of a stop; re-raise its error.

    A connected session closes itself on a stop (`_wait_stop`). Everything else — a dial to
    a dashboard that does not answer, the wait for `welcome`, an enrollment, a clone — is
    cancelled, and cancelled again while it is still awaiting something on its way out
    (such as a close handshake with a peer that never answers).
    """
    done, _ = await asyncio.wait({work}, timeout=STOP_GRACE_S)
    while not done:
        work.cancel()
        done, _ = await asyncio.wait({work}, timeout=0.1)
    if not work.cancelled():
        work.result()


def run_agent(opts: AgentOptions) -> None:
    """Run the agent until stopped; re-execute this process when a restart was asked."""
    if asyncio.run(_main(opts)):
        log.info("agent: restarting")
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
