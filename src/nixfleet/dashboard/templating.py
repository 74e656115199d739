"""The dashboard's HTML templates, with Jinja loaded when the first page is rendered.

Agents and API callers never get a page, so a dashboard that serves them only need not
carry Jinja and Starlette's templating (about 1.6 MiB and 20 ms of start-up; see
docs/benchmarks.md, "Fifth pass"). The first page pays that once; Jinja compiles each
template on its first render either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi.templating import Jinja2Templates
    from starlette.requests import Request
    from starlette.responses import Response


class Templates:
    """The templates under one directory, rendered as Starlette's Jinja2Templates does."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._jinja: Jinja2Templates | None = None

    @property
    def jinja(self) -> Jinja2Templates:
        """Return Starlette's renderer, made on first use."""
        if self._jinja is None:
            from fastapi.templating import Jinja2Templates

            self._jinja = Jinja2Templates(directory=str(self.directory))
        return self._jinja

    # The name the routes know from Starlette's Jinja2Templates.
    def TemplateResponse(
        self,
        request: Request,
        name: str,
        context: dict[str, Any] | None = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Return the page name rendered with context, as an HTML response."""
        return self.jinja.TemplateResponse(
            request, name, context, status_code=status_code, headers=headers
        )
