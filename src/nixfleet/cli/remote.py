"""The remote side of `nixfleet ctl`: a dashboard reached over HTTPS with an API token.

Nothing here imports the dashboard: `ctl` is a client, and talks only HTTP (httpx) and
the event stream. Every way a call can end maps to one exit code a CI job can test:

    0  done (and, with --wait, every command or rollout succeeded)
    1  a command or a rollout ran and failed (failed, timed out, cancelled, lost, stopped)
    2  usage: a bad invocation, or the dashboard refused the request as wrong (4xx)
    3  authentication or permission: no token, a refused token, or out of its role/scope
    4  the dashboard could not be reached or could not answer (network, TLS, 5xx, 429)
    5  --wait ran out of time before everything finished
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: `nixfleet serve` loads this group too
    import httpx

OK, FAILED, USAGE, AUTH, UNREACHABLE, TIMED_OUT = 0, 1, 2, 3, 4, 5
# A reading of the stream waits at most this long before checking the deadline again.
_READ_S = 20.0


class CtlError(Exception):
    """The call cannot go on; `code` is the exit code, the message a sentence for people."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def exit_code_of(status: int) -> int:
    """Return the exit code an HTTP error status stands for."""
    if status in (401, 403):
        return AUTH
    if status == 429 or status >= 500:
        return UNREACHABLE
    return USAGE


def read_token(token_file: Path | None) -> str:
    """Return the API token: from token_file when given, else NIXFLEET_TOKEN.

    A file keeps the token out of the environment of every child of a CI step.
    """
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise CtlError(USAGE, f"ctl: cannot read the token file: {exc.strerror}") from None
    else:
        token = os.environ.get("NIXFLEET_TOKEN", "").strip()
    if not token:
        raise CtlError(AUTH, "ctl: no API token (set NIXFLEET_TOKEN or pass --token-file)")
    if not token.startswith("nft_"):
        raise CtlError(AUTH, "ctl: that is not an API token (they start with nft_)")
    return token


@dataclass
class Remote:
    """One dashboard, one token: JSON calls and the event stream."""

    http: httpx.Client

    @classmethod
    def open(cls, url: str, token: str, ca: Path | None, timeout_s: float) -> Remote:
        import httpx

        if not url.startswith(("https://", "http://")):
            raise CtlError(USAGE, "ctl: --url must start with https:// (or http:// on loopback)")
        verify: Any = True
        if ca is not None:
            if not ca.is_file():
                raise CtlError(USAGE, f"ctl: no CA file at {ca}")
            verify = str(ca)
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        client = httpx.Client(
            base_url=url.rstrip("/"), headers=headers, verify=verify, timeout=timeout_s
        )
        return cls(client)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Return the JSON answer of one call, or raise CtlError with its exit code."""
        import httpx

        try:
            res = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CtlError(UNREACHABLE, f"ctl: the dashboard cannot be reached: {exc}") from None
        if res.is_success:
            return res.json()
        raise CtlError(exit_code_of(res.status_code), _detail(res))

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params={k: v for k, v in params.items() if v})

    def post(self, path: str, body: Any = None) -> Any:
        return self.call("POST", path, json=body)

    def events(self, deadline: float | None) -> Iterator[tuple[str, Any]]:
        """Yield (event, data) from the live stream, from its snapshot on, until deadline.

        A read that sees nothing for a while ends the stream so the caller can check its
        deadline and open it again; `session_ended` (the token was revoked) is an AUTH
        failure.
        """
        import httpx

        left = _READ_S if deadline is None else max(0.5, min(_READ_S, deadline - time.time()))
        timeout = httpx.Timeout(self.http.timeout.connect or 10.0, read=left)
        headers = {"Accept": "text/event-stream"}
        try:
            with self.http.stream("GET", "/api/events", timeout=timeout, headers=headers) as res:
                if not res.is_success:
                    res.read()
                    raise CtlError(exit_code_of(res.status_code), _detail(res))
                for name, data in sse_events(res.iter_lines()):
                    if name == "session_ended":
                        raise CtlError(AUTH, "ctl: the dashboard ended the stream (token revoked?)")
                    yield name, data
        except httpx.ReadTimeout:
            return
        except httpx.HTTPError as exc:
            raise CtlError(UNREACHABLE, f"ctl: the event stream broke: {exc}") from None


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """Yield (event name, parsed data) of each complete frame of a text/event-stream."""
    name, data = "", ""
    for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif line == "":
            if name:
                yield name, json.loads(data) if data else {}
            name, data = "", ""


def _detail(res: httpx.Response) -> str:
    """Return the dashboard's sentence for a refusal, or the status when it sent none."""
    try:
        body = res.json()
        detail = body.get("detail") if isinstance(body, dict) else None
    except ValueError:
        detail = None
    text = detail if isinstance(detail, str) and detail else f"HTTP {res.status_code}"
    return f"ctl: the dashboard answered {res.status_code}: {text}"
