"""What the security panel shows: failures per hour, offenders, events, alerts, channels."""

from __future__ import annotations

import time
from typing import Any

from nixfleet.dashboard.context import Context
from nixfleet.storage import security_events as store

HOUR = 3600
HOURS = 24
CHART_W, CHART_H, BAR_GAP = 480, 120, 2


def hourly(times: list[float], now: float) -> tuple[float, list[int]]:
    """Return (start, counts): HOURS hourly buckets ending with the current hour."""
    start = (now // HOUR) * HOUR - (HOURS - 1) * HOUR
    counts = [0] * HOURS
    for t in times:
        i = int((t - start) // HOUR)
        if 0 <= i < HOURS:
            counts[i] += 1
    return start, counts


def bars(start: float, counts: list[int]) -> list[dict[str, Any]]:
    """Return SVG bar geometry (attributes only: the CSP allows no inline styles)."""
    top = max(counts, default=0) or 1
    width = CHART_W / len(counts)
    out = []
    for i, n in enumerate(counts):
        h = round(n / top * (CHART_H - 14), 1) if n else 0
        out.append(
            {
                "x": round(i * width, 1),
                "y": round(CHART_H - h, 1),
                "w": round(width - BAR_GAP, 1),
                "h": h,
                "count": n,
                "hour": time.strftime("%H:00", time.gmtime(start + i * HOUR)),
            }
        )
    return out


async def summary(ctx: Context, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    since = now - HOURS * HOUR
    start, counts = hourly(await store.failure_times(ctx.db, since), now)
    return {
        "generated_at": now,
        "failures_per_hour": [
            {"hour_start": start + i * HOUR, "count": n} for i, n in enumerate(counts)
        ],
        "failures_24h": sum(counts),
        "top_addresses": await store.top_addresses(ctx.db, since),
        "recent": await store.recent(ctx.db, since, limit=30),
        "alerts": ctx.alerts.state(),
        "alert_history": list(ctx.alerts.history)[:10],
        "channels": ctx.alerts.notifier.health(),
        "chart": {"width": CHART_W, "height": CHART_H, "bars": bars(start, counts)},
    }
