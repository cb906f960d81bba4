"""The operator dashboard and the run report in headless Chromium (Debian's package), with
the network closed as in test_docs_offline: every request that leaves the loopback is
refused and fails the test, name resolution is closed.

One demo server for the module, with a generated busy market beside the demo one, so every
chart has data; one finished run shared by the tests, and one long run watched live and
cancelled from the page. Waits are on page state (selectors, chart data), never on sleeps.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from dashboard_kit import (
    all_pages,
    busy_demo_server,
    get_run,
    headers,
    submit,
    wait_final,
)
from ops_testkit import BIN, CHROMIUM_FLAGS, LiveServer, chromium_path

LOOPBACK = {"127.0.0.1", "localhost"}
WAIT_MS = 120_000  # a loaded 2-core machine: generous, and only ever waited on page state


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with busy_demo_server(tmp_path_factory.mktemp("dashboard-server")) as live:
        yield live


@pytest.fixture(scope="module")
def finished(server: LiveServer) -> dict[str, Any]:
    """A finished run of the whole market and what the API says of it (the expected data)."""
    run = wait_final(server, submit(server, 4)["id"])
    assert run["status"] == "succeeded", run
    base = f"/v1/match-runs/{run['id']}"
    bottlenecks = httpx.get(server.url + base + "/bottlenecks", headers=headers(server)).json()
    return {
        "run": run,
        "bottlenecks": bottlenecks,
        "assignments": all_pages(server, base + "/assignments"),
        "utilisation": all_pages(server, base + "/utilisation"),
    }


@dataclass
class Browser:
    page: Any
    errors: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)


@contextmanager
def browser(viewport_height: int = 1000, scale: float = 1.0) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=chromium_path(), args=CHROMIUM_FLAGS, headless=True
        )
        try:
            context = chromium.new_context(
                viewport={"width": 1280, "height": viewport_height}, device_scale_factor=scale
            )
            seen = Browser(page=None)

            def guard(route, request) -> None:  # type: ignore[no-untyped-def]
                url = request.url
                if url.startswith(("data:", "blob:", "file:")) or urlsplit(url).hostname in (
                    LOOPBACK
                ):
                    route.continue_()
                else:
                    seen.outside.append(url)
                    route.abort("blockedbyclient")

            context.route("**/*", guard)
            page = context.new_page()
            page.on("pageerror", lambda exc: seen.errors.append(str(exc)))
            page.on(
                "console",
                lambda msg: seen.errors.append(msg.text) if msg.type == "error" else None,
            )
            seen.page = page
            yield seen
        finally:
            chromium.close()


def _sign_in(page: Any, server: LiveServer, key: str, path: str = "/dashboard") -> None:
    page.goto(server.url + path, timeout=WAIT_MS)
    page.fill("#key", key)
    page.click("#key-form button[type=submit]")


def _trace(page: Any, chart: str) -> list[dict[str, Any]]:
    """The chart's data as Plotly holds it (after drawing)."""
    return list(
        page.evaluate(
            "(id) => document.getElementById(id).data.map(t => ({type: t.type, name: t.name, "
            "x: Array.from(t.x || []), y: Array.from(t.y || []), z: t.z || null}))",
            chart,
        )
    )


def _assert_run_views(page: Any, expected: dict[str, Any]) -> None:
    """The finished run's four charts are drawn, with the API's figures."""
    bottlenecks = expected["bottlenecks"]
    # Utilisation heatmap: a row per site with capacity, a column per month, values in [0, 1].
    sites = sorted({row["site_id"] for row in expected["utilisation"]})
    months = sorted({row["month"] for row in expected["utilisation"]})
    (heat,) = _trace(page, "chart-utilisation")
    assert heat["type"] == "heatmap"
    assert heat["y"] == sites and heat["x"] == months
    values = [v for row in heat["z"] for v in row if v is not None]
    assert len(values) > len(sites) and all(0 <= v <= 1.0001 for v in values)
    assert max(values) > 0.3
    assert page.locator("#chart-utilisation .heatmaplayer image").count() >= 1
    # Unmet demand by category and by market: one bar per group, the API's hours.
    category, market = _trace(page, "chart-unmet")
    assert category["x"] == [g["key"] for g in bottlenecks["by_category"]]
    assert category["y"] == [g["hours"] for g in bottlenecks["by_category"]]
    assert market["x"] == [g["key"] for g in bottlenecks["by_market"]]
    bars = len(bottlenecks["by_category"]) + len(bottlenecks["by_market"])
    assert bars > 2 and page.locator("#chart-unmet .bars .point").count() == bars
    # Bottleneck certifications.
    (certs,) = _trace(page, "chart-certifications")
    assert certs["y"] == [g["key"] for g in bottlenecks["certifications"]]
    assert len(certs["y"]) > 0
    assert page.locator("#chart-certifications .bars .point").count() == len(certs["y"])
    # Placements per CDMO: primary placements add up to the run's placed projects.
    # (drawn from /placements-by-cdmo, checked here against the assignments themselves)
    primary, second = _trace(page, "chart-placements")
    assignments = expected["assignments"]
    placed = {a["project_id"] for a in assignments if a["role"] == "primary"}
    assert sum(primary["y"]) == len(placed) == expected["run"]["summary"]["placed"]
    assert set(primary["x"]) == {a["cdmo_id"] for a in assignments}
    seconds = {(a["cdmo_id"], a["project_id"]) for a in assignments if a["role"] != "primary"}
    assert sum(second["y"]) == len(seconds)
    assert primary["y"] == sorted(primary["y"], reverse=True)
    assert page.locator("#chart-placements .bars .point").count() >= len(primary["x"])
    # The run's convergence, replayed from its events: objective points, bound points.
    objective, bound = _trace(page, "chart-convergence")
    assert len(objective["y"]) >= 1 and len(bound["y"]) >= 1
    assert objective["y"][-1] == pytest.approx(expected["run"]["summary"]["objective"], rel=0.01)


def test_the_dashboard_draws_a_finished_run_with_data(
    server: LiveServer, finished: dict[str, Any], tmp_path: Path
) -> None:
    run_id = finished["run"]["id"]
    with browser(viewport_height=1600) as seen:
        page = seen.page
        _sign_in(page, server, server.key("operator"), f"/dashboard#run={run_id}")
        page.wait_for_selector('#analytics[data-rendered="true"]', timeout=WAIT_MS)
        assert page.locator(f'#runs tbody tr[data-run-id="{run_id}"]').count() == 1
        assert "succeeded" in page.inner_text("#run-facts")
        _assert_run_views(page, finished)
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        # The key lives in this tab's sessionStorage, nowhere else (no cookie).
        assert page.evaluate("sessionStorage.getItem('cdmo.operatorKey')") == server.key("operator")
        assert page.context.cookies() == []
    assert seen.outside == [], f"requests left the machine: {seen.outside}"
    assert seen.errors == []
    print(f"dashboard screenshot: {tmp_path / 'dashboard.png'}")
    readme_dir = os.environ.get("CDMO_SCREENSHOT_DIR")  # the README's image (see README)
    if readme_dir:
        with browser(viewport_height=1600, scale=0.5) as small:
            _sign_in(small.page, server, server.key("operator"), f"/dashboard#run={run_id}")
            small.page.wait_for_selector('#analytics[data-rendered="true"]', timeout=WAIT_MS)
            small.page.screenshot(path=str(Path(readme_dir) / "dashboard.png"), full_page=True)


def test_without_an_operator_key_the_dashboard_shows_nothing(
    server: LiveServer, finished: dict[str, Any]
) -> None:
    # The page itself holds no data and refuses inline and foreign scripts.
    shell = httpx.get(server.url + "/dashboard")
    assert shell.status_code == 200
    assert finished["run"]["id"] not in shell.text
    assert all(server.key(role) not in shell.text for role in ("operator", "maker", "cdmo"))
    csp = shell.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert shell.headers["cache-control"] == "no-store"
    # The data behind it is the API's, which hides runs from everyone else.
    for role in ("maker", "cdmo"):
        r = httpx.get(server.url + "/v1/match-runs", headers=headers(server, role))
        assert r.status_code == 404
    with browser() as seen:
        page = seen.page
        for key, message in (
            (server.key("maker"), "not an operator"),
            (server.key("cdmo"), "not an operator"),
            ("ck_not_a_key", "refused"),
        ):
            _sign_in(page, server, key)
            page.wait_for_function(
                "(m) => document.getElementById('login-error').textContent.includes(m)",
                arg=message,
                timeout=WAIT_MS,
            )
            assert page.locator("#app").is_hidden()
            assert page.locator("#runs tbody tr").count() == 0
            assert finished["run"]["id"] not in page.content()
            assert page.evaluate("sessionStorage.getItem('cdmo.operatorKey')") is None
    assert seen.outside == []
    # 401s and 404s are the answers being tested; anything else is an error.
    assert all("status of 40" in e for e in seen.errors), seen.errors


def test_a_live_run_converges_on_the_page_and_is_cancelled_from_it(
    server: LiveServer, finished: dict[str, Any], tmp_path: Path
) -> None:
    # Long enough that the bound arrives (a fixed share of the limit, about a third) well
    # before the end: the run is cancelled from the page once both curves have points.
    run = submit(server, 120)
    try:
        with browser(viewport_height=1200) as seen:
            page = seen.page
            _sign_in(page, server, server.key("operator"), f"/dashboard#run={run['id']}")
            page.wait_for_selector("#chart-convergence .main-svg", timeout=WAIT_MS)
            # Objective and bound points arrive from the event stream while it solves.
            page.wait_for_function(
                "() => { const d = document.getElementById('chart-convergence').data;"
                " return d && d[0].x.length >= 2 && d[1].x.length >= 1; }",
                timeout=WAIT_MS,
            )
            assert get_run(server, run["id"])["status"] == "running"
            facts = page.inner_text("#run-facts")  # the figures follow the stream too
            assert re.search(r"objective: [\d,]+\n", facts), facts
            assert page.locator("#chart-convergence .scatterlayer .trace .points path").count() >= 3
            objective, bound = _trace(page, "chart-convergence")
            assert objective["x"] == sorted(objective["x"])
            assert bound["y"][-1] >= objective["y"][-1] - 1e-6  # a bound bounds
            page.screenshot(path=str(tmp_path / "live.png"), full_page=True)
            page.click("#cancel-run")
            page.wait_for_selector('#run-view[data-final="cancelled"]', timeout=WAIT_MS)
            assert "cancelled" in page.inner_text("#run-facts")
        assert seen.outside == [] and seen.errors == []
    finally:
        if get_run(server, run["id"])["status"] not in ("cancelled", "succeeded", "failed"):
            httpx.post(f"{server.url}/v1/match-runs/{run['id']}/cancel", headers=headers(server))
    final = wait_final(server, run["id"])
    assert final["status"] == "cancelled" and final["summary"]["partial"] is True


def test_the_report_is_one_self_contained_file_with_the_same_views(
    server: LiveServer, finished: dict[str, Any], tmp_path: Path
) -> None:
    import subprocess

    run_id = finished["run"]["id"]
    out = tmp_path / "report.html"
    env = {**os.environ, "CDMO_API_KEY": server.key("operator")}
    with out.open("wb") as stdout:
        done = subprocess.run(
            [str(BIN / "cdmo"), "report", run_id, "--base-url", server.url],
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=env,
            timeout=300,
        )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "<script src=" not in text and '<link rel="stylesheet"' not in text
    with browser(viewport_height=1600) as seen:
        page = seen.page
        page.goto(out.as_uri(), timeout=WAIT_MS)
        page.wait_for_selector('body[data-rendered="true"]', timeout=WAIT_MS)
        _assert_run_views(page, finished)
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert seen.outside == [] and seen.errors == []


def test_the_report_of_an_unknown_run_is_one_line_and_exit_2(server: LiveServer) -> None:
    import subprocess

    env = {**os.environ, "CDMO_API_KEY": server.key("operator")}
    done = subprocess.run(
        [str(BIN / "cdmo"), "report", "run_nope", "--base-url", server.url],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "run_nope" in done.stderr


def test_dashboard_assets_come_from_the_service(server: LiveServer) -> None:
    plotly = httpx.get(server.url + "/static/dashboard/plotly.min.js")
    assert plotly.status_code == 200 and len(plotly.content) > 1_000_000
    assert plotly.headers["content-type"].startswith("text/javascript")
    assert httpx.get(server.url + "/static/dashboard/dashboard.js").status_code == 200
    unknown = httpx.get(server.url + "/static/dashboard/secret.py")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"].startswith("application/problem+json")


def test_placements_by_cdmo_add_up_to_the_assignments(
    server: LiveServer, finished: dict[str, Any]
) -> None:
    run_id = finished["run"]["id"]
    body = httpx.get(
        f"{server.url}/v1/match-runs/{run_id}/placements-by-cdmo", headers=headers(server)
    ).json()
    assert body["run_id"] == run_id
    expected: dict[str, dict[str, Any]] = {}
    for a in finished["assignments"]:
        entry = expected.setdefault(a["cdmo_id"], {"primary": set(), "second_source": set()})
        entry["primary" if a["role"] == "primary" else "second_source"].add(a["project_id"])
    got = {i["cdmo_id"]: i for i in body["items"]}
    assert set(got) == set(expected)
    for cdmo_id, entry in expected.items():
        assert got[cdmo_id]["primary"] == len(entry["primary"])
        assert got[cdmo_id]["second_source"] == len(entry["second_source"])
        value = sum(a["value"] for a in finished["assignments"] if a["cdmo_id"] == cdmo_id)
        assert got[cdmo_id]["value"] == pytest.approx(value)
    for role in ("maker", "cdmo"):  # operators only, like every run endpoint
        hidden = httpx.get(
            f"{server.url}/v1/match-runs/{run_id}/placements-by-cdmo", headers=headers(server, role)
        )
        assert hidden.status_code == 404
