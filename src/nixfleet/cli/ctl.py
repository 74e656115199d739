"""`nixfleet ctl`: drive a running dashboard from a script or a CI job, with an API token.

`--url` (or NIXFLEET_URL) names the dashboard; the token comes from NIXFLEET_TOKEN or
`--token-file`. TLS is verified (`--ca` for a private CA). `--json` prints one JSON
object a line, so the output pipes into `jq`. The exit codes are in `cli/remote.py`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from nixfleet.cli.remote import (
    FAILED,
    OK,
    TIMED_OUT,
    USAGE,
    CtlError,
    Remote,
    read_token,
)

app = typer.Typer(
    no_args_is_help=True,
    help="Drive a running dashboard with an API token (exit codes: see `nixfleet ctl --help`).",
    epilog="Exit codes: 0 done; 1 a command or rollout failed; 2 usage or a refused request;"
    " 3 authentication or permission; 4 dashboard unreachable; 5 --wait timed out.",
)
FINAL = frozenset({"succeeded", "failed", "cancelled", "timed_out", "lost"})
ROLLOUT_FINAL = frozenset({"completed", "stopped", "aborted"})
AsJson = Annotated[bool, typer.Option("--json", help="One JSON object a line.")]
Wait = Annotated[bool, typer.Option(help="Wait until every command has finished.")]
Timeout = Annotated[float, typer.Option(help="With --wait: give up after this many seconds.")]
Label = Annotated[str, typer.Option(help="Hosts matching a label selector: role=web,tier=1.")]


@app.callback()
def connect(
    ctx: typer.Context,
    url: Annotated[str, typer.Option(envvar="NIXFLEET_URL", help="The dashboard.")] = "",
    token_file: Annotated[
        Path | None, typer.Option(help="Read the token here (else NIXFLEET_TOKEN).")
    ] = None,
    ca: Annotated[Path | None, typer.Option(help="Trust this CA (PEM) for the dashboard.")] = None,
    request_timeout: Annotated[float, typer.Option(help="Seconds per request.")] = 30.0,
) -> None:
    """Drive a running dashboard with an API token."""
    ctx.obj = lambda: _open(url, token_file, ca, request_timeout)


def _open(url: str, token_file: Path | None, ca: Path | None, timeout_s: float) -> Remote:
    if not url:
        raise CtlError(USAGE, "ctl: name the dashboard with --url or NIXFLEET_URL")
    return Remote.open(url, read_token(token_file), ca, timeout_s)


def _run(ctx: typer.Context, action: Callable[[Remote], int]) -> None:
    """Run action against the dashboard and exit with its code (or the failure's)."""
    try:
        code = action(ctx.obj())
    except CtlError as exc:
        typer.echo(str(exc).removeprefix("ctl: "), err=True)
        raise typer.Exit(exc.code) from None
    raise typer.Exit(code)


def _emit(row: dict[str, Any], as_json: bool, text: str) -> None:
    typer.echo(json.dumps(row, separators=(",", ":")) if as_json else text)


# --- reading --------------------------------------------------------------------------------
@app.command("hosts")
def hosts(
    ctx: typer.Context,
    state: Annotated[list[str] | None, typer.Option(help="Only in this state (repeat).")] = None,
    label: Label = "",
    search: Annotated[str, typer.Option(help="Only hosts whose id or labels contain it.")] = "",
    as_json: AsJson = False,
) -> None:
    """List hosts, filtered as on the fleet page."""

    def show(remote: Remote) -> int:
        view = remote.get("/api/hosts", state=state or [], label=label)
        wanted = search.lower()
        for host in view["hosts"]:
            labels = ",".join(f"{k}={v}" for k, v in (host.get("labels") or {}).items())
            if wanted and wanted not in f"{host['id']} {labels}".lower():
                continue
            _emit(_host_row(host), as_json, _host_line(host, labels))
        return OK

    _run(ctx, show)


def _host_row(host: dict[str, Any]) -> dict[str, Any]:
    deploy = host.get("deploy") or {}
    return {
        "id": host["id"],
        "state": deploy.get("state"),
        "online": host.get("online"),
        "deployed_commit": deploy.get("deployed_commit"),
        "labels": host.get("labels") or {},
        "location": host.get("location"),
        "reboot_needed": host.get("reboot_needed"),
    }


def _host_line(host: dict[str, Any], labels: str) -> str:
    deploy = host.get("deploy") or {}
    online = "online" if host.get("online") else "offline"
    commit = (deploy.get("deployed_commit") or "")[:10] or "-"
    return f"{host['id']:<24} {deploy.get('state') or '-':<15} {online:<8} {commit:<11} {labels}"


@app.command("host")
def host(ctx: typer.Context, host_id: str, as_json: AsJson = False) -> None:
    """Show one host and its latest commands."""

    def show(remote: Remote) -> int:
        found = remote.get("/api/hosts", host_id=[host_id])["hosts"]
        if not found:
            raise CtlError(USAGE, f"ctl: there is no host {host_id!r}")
        recent = remote.get(f"/api/hosts/{found[0]['id']}/commands", limit=10)["commands"]
        if as_json:
            typer.echo(json.dumps({**found[0], "commands": recent}, separators=(",", ":")))
            return OK
        labels = ",".join(f"{k}={v}" for k, v in (found[0].get("labels") or {}).items())
        typer.echo(_host_line(found[0], labels))
        for cmd in recent:
            typer.echo(f"  {_command_line(cmd)}")
        return OK

    _run(ctx, show)


@app.command("audit")
def audit(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 50,
    actor: str = "",
    action: str = "",
    host: str = "",
    since: Annotated[str, typer.Option(help="ISO 8601 or Unix time.")] = "",
    as_json: AsJson = False,
) -> None:
    """Show the audit log, newest first."""

    def show(remote: Remote) -> int:
        query = {"limit": limit, "actor": actor, "action": action, "host": host, "since": since}
        for e in remote.get("/api/audit", **query)["entries"]:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["at"]))
            line = (
                f"{when}  {e['actor']:<28} {e['action']:<16} {e['host'] or '-':<16} {e['result']}"
            )
            _emit(e, as_json, line)
        return OK

    _run(ctx, show)


# --- acting on hosts ------------------------------------------------------------------------
@app.command("plan")
def plan(
    ctx: typer.Context,
    host_ids: Annotated[list[str] | None, typer.Argument(help="Hosts (or --label).")] = None,
    label: Label = "",
    wait: Wait = False,
    timeout: Timeout = 900.0,
    as_json: AsJson = False,
) -> None:
    """Preview a switch (build, diff closures) on hosts."""
    _run(ctx, lambda r: _queue(r, "plan", host_ids or [], label, wait, timeout, as_json))


@app.command("switch")
def switch(
    ctx: typer.Context,
    host_ids: Annotated[list[str] | None, typer.Argument(help="Hosts (or --label).")] = None,
    label: Label = "",
    wait: Wait = False,
    timeout: Timeout = 1800.0,
    as_json: AsJson = False,
) -> None:
    """Deploy the configuration's head to hosts (exit 1 if any switch fails)."""
    _run(ctx, lambda r: _queue(r, "switch", host_ids or [], label, wait, timeout, as_json))


def _queue(
    remote: Remote,
    kind: str,
    host_ids: list[str],
    label: str,
    wait: bool,
    timeout: float,
    as_json: bool,
) -> int:
    """Queue kind on the hosts; with wait, follow every command to its end."""
    if bool(host_ids) == bool(label):
        raise CtlError(USAGE, "ctl: name the hosts, or give --label (one of the two)")
    body = {"command": kind, **({"host_ids": host_ids} if host_ids else {"label": label})}
    results = remote.post("/api/commands/bulk", body)["results"]
    code = OK
    for r in results:
        if "error" in r:
            code = FAILED
            _emit(r, as_json, f"{r['host_id']:<24} refused: {r['detail']}")
        elif not wait:
            _emit(r, as_json, f"{r['host_id']:<24} {kind} {r['state']} ({r['command_id']})")
    ids = [r["command_id"] for r in results if "command_id" in r]
    if not wait or not ids:
        return code
    for cmd in wait_commands(remote, ids, time.time() + timeout):
        _emit(_command_row(cmd), as_json, _command_line(cmd))
        if cmd["state"] != "succeeded":
            code = FAILED
    return code


def wait_commands(remote: Remote, ids: list[str], deadline: float) -> list[dict[str, Any]]:
    """Return the commands named once each has finished, in the order they finished.

    The stream is opened first and the state read after its snapshot, so an end that
    comes between the two is never missed.
    """
    open_ = set(ids)
    done: list[dict[str, Any]] = []

    def note(cmd: dict[str, Any]) -> None:
        if cmd["id"] in open_ and cmd["state"] in FINAL:
            open_.discard(cmd["id"])
            done.append(cmd)

    while open_:
        for name, data in remote.events(deadline):
            if name in ("snapshot", "resync"):
                seen = {c["id"]: c for c in data.get("commands", [])}
                for cid in sorted(open_):
                    note(seen.get(cid) or remote.get(f"/api/commands/{cid}"))
            elif name == "command":
                note(data["command"])
            if not open_:
                break
        if open_ and time.time() >= deadline:
            raise CtlError(TIMED_OUT, f"ctl: still running after the timeout: {sorted(open_)}")
    return done


def _command_row(cmd: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "host_id", "kind", "state", "exit_code", "detail", "actor", "finished_at")
    return {k: cmd.get(k) for k in keys}


def _command_line(cmd: dict[str, Any]) -> str:
    code = "" if cmd.get("exit_code") is None else f" (exit {cmd['exit_code']})"
    detail = f": {cmd['detail']}" if cmd.get("detail") else ""
    return f"{cmd['host_id']:<24} {cmd['kind']} {cmd['state']}{code}{detail} [{cmd['id']}]"


# --- logs ------------------------------------------------------------------------------------
@app.command("logs")
def logs(
    ctx: typer.Context,
    command_id: str,
    follow: Annotated[bool, typer.Option(help="Go on live until the command ends.")] = False,
    as_json: AsJson = False,
) -> None:
    """Print a command's output; --follow streams it live (exit 1 if the command fails)."""
    _run(ctx, lambda r: _logs(r, command_id, follow, as_json))


def _logs(remote: Remote, command_id: str, follow: bool, as_json: bool) -> int:
    printer = _LinePrinter(as_json)
    cid = remote.get(f"/api/commands/{command_id}")["id"]
    if not follow:
        printer.pages(remote, cid)
        return OK
    while True:
        for name, data in remote.events(None):
            if name in ("snapshot", "resync"):
                printer.pages(remote, cid)  # what came before the stream (or was dropped)
                cmd = remote.get(f"/api/commands/{cid}")
                if cmd["state"] in FINAL:
                    return _ended(remote, printer, cmd)
            elif name == "output" and data.get("command_id") == cid:
                printer.lines(data.get("lines", []))
            elif name == "command" and data["command"]["id"] == cid:  # noqa: SIM102
                if data["command"]["state"] in FINAL:
                    return _ended(remote, printer, data["command"])


def _ended(remote: Remote, printer: _LinePrinter, cmd: dict[str, Any]) -> int:
    printer.pages(remote, cmd["id"])
    typer.echo(_command_line(cmd), err=True)
    return OK if cmd["state"] == "succeeded" else FAILED


class _LinePrinter:
    """Print each output line once, in order: pages and live events overlap."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.after = 0

    def pages(self, remote: Remote, cid: str) -> None:
        while True:
            page = remote.get(f"/api/commands/{cid}/output", after_seq=self.after, limit=5000)
            self.lines(page["lines"])
            if page["next"] is None:
                return

    def lines(self, lines: list[dict[str, Any]]) -> None:
        for line in lines:
            seq = line.get("seq", 0)
            if seq <= self.after:
                continue
            self.after = seq
            text = line.get("text", "")
            _emit(line, self.as_json, text)
        sys.stdout.flush()


# --- rollouts ---------------------------------------------------------------------------------
rollout = typer.Typer(no_args_is_help=True, help="Start and steer rollouts (waves).")
app.add_typer(rollout, name="rollout")


@rollout.command("start")
def rollout_start(
    ctx: typer.Context,
    host_ids: Annotated[list[str] | None, typer.Argument(help="Hosts (or --label).")] = None,
    label: Label = "",
    command: Annotated[str, typer.Option(help="switch, pull-switch, plan, …")] = "switch",
    canary: Annotated[int, typer.Option(min=0)] = 1,
    wave_size: Annotated[int, typer.Option(min=0, help="0: the rest in one wave.")] = 0,
    pause_s: Annotated[float, typer.Option(min=0)] = 0,
    failure_budget: Annotated[int, typer.Option(min=0)] = 0,
    wait: Annotated[bool, typer.Option(help="Wait until the rollout ends.")] = False,
    timeout: Timeout = 3600.0,
    as_json: AsJson = False,
) -> None:
    """Start a rollout; with --wait, exit 1 unless it completes."""

    def start(remote: Remote) -> int:
        if bool(host_ids) == bool(label):
            raise CtlError(USAGE, "ctl: name the hosts, or give --label (one of the two)")
        policy = {
            "canary": canary,
            "wave_size": wave_size,
            "pause_s": pause_s,
            "failure_budget": failure_budget,
        }
        hosts = {"host_ids": host_ids} if host_ids else {"label": label}
        ro = remote.post("/api/rollouts", {"command": command, "policy": policy, **hosts})
        if not wait:
            _emit(_rollout_row(ro), as_json, _rollout_line(ro))
            return OK
        return _wait_rollout(remote, ro["id"], time.time() + timeout, as_json)

    _run(ctx, start)


@rollout.command("status")
def rollout_status(ctx: typer.Context, rollout_id: str, as_json: AsJson = False) -> None:
    """Show a rollout: its state, waves and report."""

    def show(remote: Remote) -> int:
        ro = remote.get(f"/api/rollouts/{rollout_id}")
        if as_json:
            typer.echo(json.dumps(ro, separators=(",", ":")))
            return OK
        typer.echo(_rollout_line(ro))
        for wave in ro.get("waves", []):
            outcomes = ", ".join(f"{h['host_id']} {h['outcome']}" for h in wave["hosts"])
            typer.echo(f"  wave {wave['index']}: {wave['state']}: {outcomes}")
        return OK

    _run(ctx, show)


def _act(action: str) -> Callable[[typer.Context, str, bool], None]:
    def act(ctx: typer.Context, rollout_id: str, as_json: AsJson = False) -> None:
        def go(remote: Remote) -> int:
            ro = remote.post(f"/api/rollouts/{rollout_id}/{action}")
            _emit(_rollout_row(ro), as_json, _rollout_line(ro))
            return OK

        _run(ctx, go)

    act.__doc__ = {
        "pause": "Pause a rollout: no new wave starts (the current one finishes).",
        "resume": "Resume a paused rollout.",
        "abort": "Abort a rollout: its queued hosts are cancelled.",
    }[action]
    return act


for _action in ("pause", "resume", "abort"):
    rollout.command(_action)(_act(_action))


def _wait_rollout(remote: Remote, rollout_id: str, deadline: float, as_json: bool) -> int:
    """Return OK once the rollout completes, FAILED if it stops or is aborted."""
    while True:
        for name, data in remote.events(deadline):
            ro = None
            if name in ("snapshot", "resync"):
                ro = remote.get(f"/api/rollouts/{rollout_id}")
            elif name == "rollout" and data["rollout"]["id"] == rollout_id:
                ro = data["rollout"]
            if ro is not None and ro["state"] in ROLLOUT_FINAL:
                _emit(_rollout_row(ro), as_json, _rollout_line(ro))
                return OK if ro["state"] == "completed" else FAILED
        if time.time() >= deadline:
            raise CtlError(TIMED_OUT, f"ctl: rollout {rollout_id} still running after the timeout")


def _rollout_row(ro: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "kind", "state", "counts", "report", "reason")
    return {k: ro.get(k) for k in keys}


def _rollout_line(ro: dict[str, Any]) -> str:
    report = ro.get("report") or ""
    return f"rollout {ro['id']} {ro.get('kind', '')} {ro['state']}: {report}".rstrip(": ")
