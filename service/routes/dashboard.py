"""``GET /dashboard``: the operator dashboard's shell and its assets (no data here).

The page holds nothing of the marketplace; its script asks for an operator's key, keeps it
in the tab's sessionStorage and calls the JSON API with it as a bearer header, so the API's
own authorisation decides what it sees (runs are 404 to anyone but operators). Thin: the
files come from :mod:`service.dashboard`.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from service import dashboard
from service.errors import NotFoundError

router = APIRouter(include_in_schema=False)

_SHELL_HEADERS = {
    "Content-Security-Policy": dashboard.CSP,
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


@router.get("/dashboard")
def dashboard_page() -> Response:
    return Response(dashboard.page(), media_type="text/html; charset=utf-8", headers=_SHELL_HEADERS)


@router.get("/static/dashboard/{name}")
def dashboard_asset(name: str) -> Response:
    if name not in dashboard.ASSETS:
        raise NotFoundError(f"no dashboard asset {name}")
    return Response(
        dashboard.asset(name),
        media_type=dashboard.ASSETS[name],
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
