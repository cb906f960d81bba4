"""Helpers of the dashboard, report and operator-CLI tests: a demo server whose market also
holds a generated busy one (600 projects at 30 % capacity: every chart has data, and a solve
uses its whole time limit, so a live run can be watched and cancelled), and run helpers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from ops_testkit import LiveServer, demo_server

FINAL = {"succeeded", "failed", "cancelled"}
BUSY = {"projects": 600, "sites": 60, "capacity_scale": 0.3}


def load_busy_market(data_dir: Path) -> None:
    """Add the generated market to the server's embedded database (it reads the market from
    the database at each run, like every process of a deployment)."""
    from matcher.generate import generate_market
    from service import repositories as repo
    from service.config import DatabaseSettings
    from service.db import Database

    snapshot = generate_market(
        BUSY["projects"],
        BUSY["sites"],
        months=12,
        seed=1,
        start="2027-01",
        capacity_scale=BUSY["capacity_scale"],
    )
    db = Database(f"sqlite:///{data_dir / 'cdmo.db'}", DatabaseSettings())
    try:
        with db.session() as session:
            repo.bulk.load_market(session=session, snapshot=snapshot)
            session.commit()
    finally:
        db.dispose()


@contextmanager
def busy_demo_server(tmp: Path) -> Iterator[LiveServer]:
    with demo_server(tmp) as server:
        load_busy_market(tmp)
        yield server


def headers(server: LiveServer, role: str = "operator") -> dict[str, str]:
    return {"Authorization": f"Bearer {server.key(role)}"}


def submit(server: LiveServer, time_limit_s: float, *, dry_run: bool = True) -> dict[str, Any]:
    response = httpx.post(
        server.url + "/v1/match-runs",
        json={"params": {"time_limit_s": time_limit_s, "seed": 1}, "dry_run": dry_run},
        headers={**headers(server), "Idempotency-Key": f"t-{time.monotonic_ns()}"},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    return dict(response.json())


def get_run(server: LiveServer, run_id: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/v1/match-runs/{run_id}", headers=headers(server))
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.3)


def wait_final(server: LiveServer, run_id: str, timeout_s: float = 180) -> dict[str, Any]:
    return dict(
        wait_for(
            lambda: (run := get_run(server, run_id))["status"] in FINAL and run,
            timeout_s,
            f"run {run_id} to finish",
        )
    )


def all_pages(server: LiveServer, path: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        body = httpx.get(server.url + path, params=params, headers=headers(server), timeout=60)
        assert body.status_code == 200, body.text
        items.extend(body.json()["items"])
        cursor = body.json()["next_cursor"]
        if not cursor:
            return items
