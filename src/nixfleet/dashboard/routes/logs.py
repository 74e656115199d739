"""A command's output as a plain-text file: every line, streamed page by page, so a
100,000-line build log costs one page of memory, not the whole log."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from fastapi import Query
from fastapi.responses import StreamingResponse

from nixfleet.dashboard import contract
from nixfleet.dashboard.deps import Ctx, CurrentSession
from nixfleet.dashboard.routetable import RouteTable
from nixfleet.storage import commands as command_store
from nixfleet.storage import output as output_store

router = RouteTable(prefix="/api/commands")
PAGE = 5000
_ANSI = re.compile(r"\x1b\[[0-9;:?<=>]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@router.get("/{command_id}/log.txt", responses=contract.body("text/plain"))
async def download_log(
    command_id: str,
    ctx: Ctx,
    _: CurrentSession,
    ansi: bool = Query(True, description="keep the colour codes (false: plain text)"),
) -> StreamingResponse:
    cmd = await command_store.get(ctx.db, command_id[:64])

    async def lines() -> AsyncIterator[bytes]:
        after = 0
        while True:
            page = await output_store.lines(ctx.db, cmd["id"], after, PAGE)
            if not page:
                return
            text = "".join(f"{ln['text']}\n" for ln in page)
            yield (text if ansi else _ANSI.sub("", text)).encode("utf-8", "replace")
            after = page[-1]["seq"]

    name = _UNSAFE_NAME.sub("-", f"{cmd['host_id']}-{cmd['kind']}-{cmd['id'][:8]}.log")
    return StreamingResponse(
        lines(),
        media_type="text/plain; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )
