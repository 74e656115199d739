"""The JSON response of every route: finite numbers only, whatever a row holds.

Starlette refuses NaN when it encodes (a 500); the stored data is read through the
protocol's bounds already, so this is the last line: a stray non-finite float is null.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from nixfleet.core import jsontext


class FiniteJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return jsontext.dumps(content).encode("utf-8")
