"""JSON text the dashboard sends: never NaN or Infinity, which browsers cannot parse.

`JSON.parse` throws on the literal `NaN` that Python's json writes by default, and one
such value in one host's row would blank the fleet page of every browser.
"""

from __future__ import annotations

import json
import math
from typing import Any


def dumps(value: Any) -> str:
    """Return compact JSON for value; a non-finite float anywhere in it becomes null."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(finite(value), separators=(",", ":"), allow_nan=False)


def finite(value: Any) -> Any:
    """Return value with every NaN or ±Infinity float (at any depth) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
