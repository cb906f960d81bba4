"""API documentation pages that work offline: /docs (Swagger UI) and /redoc (ReDoc).

The assets come from the fastapi-offline package (its ``static/`` folder, mounted by
:func:`fastapi_offline.FastAPIOffline` at ``STATIC_URL``), never from a CDN. The ReDoc bundle
still points its "API docs by Redocly" logo at a CDN; :func:`install_redoc` serves the
package's bundle with that one address replaced by an inline image, so the page makes no
request outside the service.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request, Response
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import HTMLResponse

STATIC_URL = "/static/docs"
ASSETS = Path(fastapi_offline.__file__).parent / "static"
_REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
_BLANK_SVG = "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E"


@lru_cache(maxsize=1)
def _redoc_bundle() -> bytes:
    return (
        (ASSETS / "redoc.standalone.js")
        .read_bytes()
        .replace(_REDOC_LOGO.encode(), _BLANK_SVG.encode())
    )


def install_redoc(app: FastAPI, url: str = "/redoc") -> None:
    script_url = "/static/redoc/redoc.standalone.js"  # outside the STATIC_URL mount

    @app.get(script_url, include_in_schema=False)
    def redoc_script() -> Response:
        return Response(
            _redoc_bundle(),
            media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    @app.get(url, include_in_schema=False)
    def redoc_page(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{script_url}",
            redoc_favicon_url=f"{root}{STATIC_URL}/favicon.png",
            with_google_fonts=False,
        )
