"""/docs and /redoc work with the network closed: every asset comes from the service itself.

Headless Chromium (the system package) loads each page; every request the page makes is
recorded, and any that leaves the loopback is refused and fails the test. Name resolution is
closed too (``--host-resolver-rules``), as on a machine behind a firewall.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from ops_testkit import CHROMIUM_FLAGS, LiveServer, chromium_path, demo_server

LOOPBACK = {"127.0.0.1", "localhost"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with demo_server(tmp_path_factory.mktemp("docs-server")) as live:
        yield live


def _open_offline(url: str, profile: Path, ready_selector: str) -> dict[str, object]:
    """Load ``url`` in a fresh profile with the network closed; what the page did."""
    from playwright.sync_api import sync_playwright

    outside: list[str] = []
    requested: list[str] = []
    errors: list[str] = []

    def guard(route, request) -> None:  # type: ignore[no-untyped-def]
        requested.append(request.url)
        host = urlsplit(request.url).hostname
        if request.url.startswith(("data:", "blob:")) or host in LOOPBACK:
            route.continue_()
        else:
            outside.append(request.url)
            route.abort("blockedbyclient")

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=chromium_path(), args=CHROMIUM_FLAGS, headless=True
        )
        try:
            context.route("**/*", guard)
            page = context.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(url, wait_until="networkidle", timeout=60_000)
            page.wait_for_selector(ready_selector, timeout=60_000)
            shown = [
                element.get_attribute("id") or element.get_attribute("data-section-id") or ""
                for element in page.locator(ready_selector).all()
            ]
            page.screenshot(path=str(profile.parent / "page.png"))
        finally:
            context.close()
    return {"outside": outside, "requested": requested, "errors": errors, "shown": shown}


def _operation_ids(server: LiveServer) -> list[str]:
    doc = httpx.get(server.url + "/openapi.json").json()
    return [op["operationId"] for item in doc["paths"].values() for op in item.values()]


def test_swagger_ui_renders_every_operation_offline(server: LiveServer, tmp_path: Path) -> None:
    seen = _open_offline(server.url + "/docs", tmp_path / "profile", ".opblock")
    assert seen["outside"] == [], f"requests left the machine: {seen['outside']}"
    assert seen["errors"] == []
    # Swagger UI's block ids are operations-<tag>-<operationId>, once per tag.
    shown = {block_id.split("-", 2)[2] for block_id in seen["shown"]}  # type: ignore[attr-defined]
    assert shown == set(_operation_ids(server))
    assert any(u.endswith("/static/docs/swagger-ui-bundle.js") for u in seen["requested"])  # type: ignore[attr-defined]


def test_redoc_renders_every_operation_offline(server: LiveServer, tmp_path: Path) -> None:
    seen = _open_offline(
        server.url + "/redoc", tmp_path / "profile", '[data-section-id^="operation/"]'
    )
    assert seen["outside"] == [], f"requests left the machine: {seen['outside']}"
    assert seen["errors"] == []
    # ReDoc's sections are operation/<operationId>.
    shown = {section.split("/", 1)[1] for section in seen["shown"]}  # type: ignore[attr-defined]
    assert shown == set(_operation_ids(server))


def test_docs_assets_are_served_by_the_service(server: LiveServer) -> None:
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        response = httpx.get(f"{server.url}/static/docs/{asset}")
        assert response.status_code == 200, asset
        assert len(response.content) > 10_000, asset
    for page in ("/docs", "/redoc"):
        html = httpx.get(server.url + page).text
        assert "cdn." not in html and "https://" not in html, page
