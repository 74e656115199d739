"""Log set-up for the long-running commands: key=value text or one JSON object a line.

Records that carry `fields` (the access log) put them at the top level of the JSON object,
so a log shipper can index address, status and request id without parsing the message.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
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
        return json.dumps(entry, default=str)


def configure(level: str, fmt: str = "text", access_log: bool = False) -> None:
    """Send every log record to stderr in fmt ("text" or "json").

    The access log stays at INFO whatever the level, like a web server's access log; turn
    it off with NIXFLEET_ACCESS_LOG=false.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # At DEBUG, websockets logs handshake headers (the agent's bearer token) and frames
    # (a `credential` message): never below INFO, whatever the level asked for.
    logging.getLogger("websockets").setLevel(max(logging.INFO, root.level))
    if access_log:
        logging.getLogger("nixfleet.access").setLevel(logging.INFO)
