"""Log set-up for the long-running commands: key=value text or one JSON object a line.

Records that carry `fields` (the access log) put them at the top level of the JSON object,
so a log shipper can index address, status and request id without parsing the message.

Every record passes two steps at the handler, whoever logged it (our code, uvicorn,
websockets, a library at DEBUG), so no call site can forget them:
1. secrets are redacted (agent tokens, enrollment codes, session cookies, bearer
   credentials, CSRF tokens), at every level;
2. in text, every character that is not printable (newline, ESC, other control
   characters, Unicode line separators) is written as an escape, so a user name or host
   id can neither forge a log line nor send escapes to a terminal. A traceback keeps its
   line breaks (it is ours, not the client's), each of its lines escaped.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "[redacted]"

# nfa_ agent token, nft_ API token, nfe_ enrollment code, nfs_ session id (also inside a
# signed cookie).
_PREFIXED = re.compile(r"\b(nf[aest]_)[A-Za-z0-9_\-.]{6,}")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s'\"]+")
# A header or form field whose value is a credential, as headers appear in debug logs:
# `x-csrf-token: v`, `(b'cookie', b'v')`, `csrf_token=v`.
_NAMED = re.compile(
    r"(?i)((?:x-csrf-token|csrf[_-]token|cookie|set-cookie|authorization|x-metrics-token)"
    r"['\"]?\s*(?:[:=]|,\s*b?)\s*['\"]?)([^'\"\s;,)&]+)"
)
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
_CHATTY = ("websockets", "aiosqlite", "httpx", "httpcore", "apprise", "asyncio")


def redact(text: str) -> str:
    """Return text with every credential the dashboard knows the shape of replaced."""
    text = _PREFIXED.sub(lambda m: m.group(1) + REDACTED, text)
    text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    return _NAMED.sub(lambda m: m.group(1) + REDACTED, text)


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char.isprintable():
        return char  # é, ü, 東: printable beyond ASCII stays readable
    code = ord(char)
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char)
    if named:
        return named
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """Return text on one line: non-printable characters become backslash escapes."""
    if text.isascii() and text.isprintable():
        return text
    return _UNPRINTABLE.sub(_escape_char, text)


class TextFormatter(logging.Formatter):
    """The text format with every record escaped and redacted."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape(redact(super().formatMessage(record)))

    def formatException(self, ei: Any) -> str:
        text = super().formatException(ei)
        return "\n".join(escape(redact(line)) for line in text.splitlines())

    def formatStack(self, stack_info: str) -> str:
        return "\n".join(escape(redact(line)) for line in stack_info.splitlines())


class JsonFormatter(logging.Formatter):
    """One JSON object a line; json.dumps escapes control characters itself."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry["event"] = record.getMessage().split(" ", 1)[0]
            entry.update(fields)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str))


class QuietUvicorn(logging.Filter):
    """Drop uvicorn's own per-connection lines: our access log already has each one.

    Uvicorn logs every refused WebSocket handshake twice under `uvicorn.error` (the
    request line and "connection rejected"); a fleet retrying a revoked token would fill
    the error log with them.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "uvicorn.error":
            return True
        message = str(record.msg)
        return not (message.startswith("connection rejected") or '"WebSocket %s"' in message)


class Repeats(logging.Filter):
    """Let the same warning or notice through once a window, then say how many it hid.

    A fleet retrying a revoked token, or a password-guessing run, repeats one line
    (same logger, text and arguments) many times a second; the first line says it all.
    Errors always pass. Memory is bounded by max_keys.
    """

    def __init__(self, window_s: float = 60.0, max_keys: int = 10_000) -> None:
        super().__init__()
        self.window_s, self.max_keys = window_s, max_keys
        self._seen: dict[tuple[str, str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR or record.name == "nixfleet.access":
            return True
        key = (record.name, str(record.msg), repr(record.args))
        first, hidden = self._seen.get(key, (0.0, 0))
        if record.created - first < self.window_s:
            self._seen[key] = (first, hidden + 1)
            return False
        if len(self._seen) >= self.max_keys:
            self._seen.clear()
        self._seen[key] = (record.created, 0)
        if hidden:
            record.msg = f"{record.msg} (and {hidden} more like it in the last window)"
        return True


TRACE = 5  # uvicorn.logging.TRACE_LOG_LEVEL


def configure(level: str, fmt: str = "text", access_log: bool = False) -> None:
    """Send every log record to stderr in fmt ("text" or "json").

    The access log stays at INFO whatever the level, like a web server's access log; turn
    it off with NIXFLEET_ACCESS_LOG=false.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(QuietUvicorn())
    handler.addFilter(Repeats())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # uvicorn's extra level below DEBUG; it names it only when uvicorn is imported, which
    # is now later than this (imports at first use), so `--log-level trace` names it here.
    logging.addLevelName(TRACE, "TRACE")
    root.setLevel(level.upper())
    # At DEBUG these libraries print what passes through them: websockets the handshake
    # headers (the agent's bearer token) and frames (a `credential` message), aiosqlite
    # and SQLAlchemy every query's parameters (CSRF tokens, token hashes), httpx/httpcore
    # and Apprise the alert webhook URLs (secrets). Never below INFO, whatever the level
    # asked for; the redaction above is the second line of defence for everything else.
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
    # SQLAlchemy prints every statement and its parameters as soon as INFO is on.
    logging.getLogger("sqlalchemy").setLevel(max(logging.WARNING, root.level))
    if access_log:
        logging.getLogger("nixfleet.access").setLevel(logging.INFO)
