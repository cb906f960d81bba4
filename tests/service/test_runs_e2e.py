"""Match runs end to end through HTTP, against real PostgreSQL and Redis with two real
``cdmo worker`` processes (started and killed here), and in the embedded mode (SQLite + the
local process pool) for the happy path.

Markets are small (60 projects) or busy (600 projects at 30 % capacity, where a solve uses
its whole time limit); time limits are a few seconds, so the module stays short.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from runs_testkit import (
    BUSY,
    FINAL,
    MARKET_TABLES,
    SMALL,
    Key,
    Workers,
    fast_runs_settings,
    http_ok,
    load_generated,
    make_key,
    private_redis,
    read_events,
    reset_tables,
    table_rows,
    wait_run,
    wait_until,
    worker_env,
)
from service_testkit import PgAdmin, make_settings

from schemas.api import OrgKind
from service.app import create_app
from service.config import RunsSettings, Settings
from service.db import Database, upgrade
from service.runtime import build_services


@dataclass
class Env:
    name: str
    client: TestClient
    db: Database
    settings: Settings
    workers: Workers | None

    def fresh(self, market: dict[str, Any] | None = None) -> Key:
        reset_tables(self.db)
        if market is not None:
            load_generated(self.db, **market)
        return make_key(self.db, self.settings, kind=OrgKind.OPERATOR)


def _open(settings: Settings) -> tuple[Any, TestClient]:
    services = build_services(settings)
    upgrade(services.db.engine)
    return services, TestClient(create_app(settings, services))


@pytest.fixture(scope="module")
def services_env(
    pg_admin: PgAdmin, redis_url: str, worker_id: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("runs-services")
    db_url = pg_admin.create_database(f"runs{worker_id}")
    prefix = f"cdmo-test:runs:{uuid.uuid4().hex[:8]}:"
    settings = make_settings(
        db_url, redis_url, tmp, prefix, runs=RunsSettings(**fast_runs_settings())
    )
    services, client = _open(settings)
    workers = Workers(worker_env(db_url, redis_url, prefix), tmp)
    workers.start(2)
    try:
        with client:
            yield Env("services", client, services.db, settings, workers)
    finally:
        workers.stop()
        _drop_prefix(redis_url, prefix)


def _drop_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=prefix + "*", count=500))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="module")
def embedded_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("runs-embedded")
    settings = make_settings(
        f"sqlite:///{tmp / 'runs.db'}", None, tmp, "x:", runs=RunsSettings(**fast_runs_settings())
    )
    services, client = _open(settings)
    with client:
        yield Env("embedded", client, services.db, settings, None)


def _submit(env: Env, key: Key, status: int = 202, **body: Any) -> dict[str, Any]:
    response = env.client.post("/v1/match-runs", json=body, headers=key.headers)
    run = http_ok(response, status)
    if status == 202:
        assert response.headers["location"] == f"/v1/match-runs/{run['id']}"
    return run


def _happy_path(env: Env) -> None:
    operator = env.fresh(SMALL)
    run = _submit(env, operator, params={"time_limit_s": 3, "seed": 3})
    assert run["status"] == "queued"
    events = read_events(env.client, operator, run["id"])
    kinds = [kind for _, kind, _ in events]
    assert kinds[-1] == "final" and "progress" in kinds, kinds
    final = json.loads(events[-1][2])
    assert final["status"] == "succeeded", final
    summary = final["summary"]
    assert summary["placed"] > 0 and summary["projects"] == SMALL["projects"]
    assert summary["placed"] + summary["unplaced"] == summary["projects"]
    assert {"snapshot", "solve", "persist", "commit"} <= set(summary["timings"])
    assert summary["commit"]["proposed"] == len(
        {(a["project_id"], a["role"]) for a in _all(env, operator, run["id"], "assignments")}
    )
    assert final["audit"]["snapshot_hash"] and set(final["audit"]["versions"]) >= {
        "matcher",
        "ortools",
        "numba",
        "numpy",
    }
    # Resuming after the first event replays only what came after it, and ends the same way.
    resumed = read_events(env.client, operator, run["id"], last_event_id=events[0][0])
    assert [e[0] for e in resumed] == [e[0] for e in events[1:]]
    # The CDMO of a placement now sees its proposals, made by this run; and no runs at all.
    first = _all(env, operator, run["id"], "assignments")[0]
    cdmo = make_key(env.db, env.settings, kind=OrgKind.CDMO, org_id=first["cdmo_id"])
    seen = http_ok(env.client.get("/v1/proposals?limit=200", headers=cdmo.headers))["items"]
    assert seen and all(p["batch_id"] == run["id"] for p in seen)
    assert {p["project_id"] for p in seen} >= {first["project_id"]}
    assert env.client.get(f"/v1/match-runs/{run['id']}", headers=cdmo.headers).status_code == 404
    assert env.client.get("/v1/match-runs", headers=cdmo.headers).status_code == 404
    listed = http_ok(env.client.get("/v1/match-runs?status=succeeded", headers=operator.headers))
    assert [r["id"] for r in listed["items"]] == [run["id"]]


def _all(env: Env, key: Key, run_id: str, what: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        url = f"/v1/match-runs/{run_id}/{what}?limit=50" + (f"&cursor={cursor}" if cursor else "")
        page = http_ok(env.client.get(url, headers=key.headers))
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("too many pages")


def test_embedded_happy_path(embedded_env: Env) -> None:
    _happy_path(embedded_env)


def test_services_happy_path(services_env: Env) -> None:
    _happy_path(services_env)


def test_cancel_a_long_run_keeps_a_partial_answer_and_commits_nothing_reads_answered_meanwhile(
    services_env: Env,
) -> None:
    env = services_env
    operator = env.fresh(BUSY)
    run = _submit(env, operator, params={"time_limit_s": 30})
    wait_until(
        lambda: http_ok(env.client.get(f"/v1/match-runs/{run['id']}", headers=operator.headers))[
            "progress"
        ],
        60,
        "the solve to start",
    )
    # The API answers while the run solves (in a worker, not here).
    for _ in range(5):
        assert env.client.get("/v1/projects?limit=5", headers=operator.headers).status_code == 200
        body = http_ok(env.client.get(f"/v1/match-runs/{run['id']}", headers=operator.headers))
        assert body["status"] == "running"
    asked = time.monotonic()
    http_ok(env.client.post(f"/v1/match-runs/{run['id']}/cancel", headers=operator.headers), 202)
    final = wait_run(env.client, operator, run["id"], FINAL, timeout_s=60)
    stopped_after = time.monotonic() - asked
    assert final["status"] == "cancelled", final
    assert final["summary"]["partial"] is True and final["summary"]["placed"] > 0
    assert final["summary"]["commit"] is None
    # About a second end to end: the heartbeat process polls the cancel flag every 0.2 s, the
    # run control stops every phase; the rest is persisting the partial answer and this
    # test's polling. Loose (5 s) for a loaded machine; the time limit was 30 s.
    assert stopped_after < 5, stopped_after
    proposals = http_ok(env.client.get("/v1/proposals", headers=operator.headers))["items"]
    assert proposals == []
    # Cancelling it again: a finished run cannot be cancelled.
    again = env.client.post(f"/v1/match-runs/{run['id']}/cancel", headers=operator.headers)
    assert again.status_code == 409
    assert again.headers["content-type"].startswith("application/problem+json")


def test_a_worker_killed_mid_run_is_replaced_and_the_run_succeeds(services_env: Env) -> None:
    env = services_env
    assert env.workers is not None
    operator = env.fresh(BUSY)
    run = _submit(env, operator, params={"time_limit_s": 8})
    running = wait_run(env.client, operator, run["id"], {"running"}, timeout_s=60)
    row = _row(env, run["id"])
    pid = int(row["worker_id"].split(":")[1])
    assert pid in env.workers.alive()
    env.workers.kill(pid)
    assert running["attempts"] == 1
    final = wait_run(env.client, operator, run["id"], FINAL, timeout_s=90)
    assert final["status"] == "succeeded", (final, env.workers.logs())
    assert final["attempts"] == 2
    assert final["summary"]["commit"]["proposed"] > 0
    env.workers.start(1)  # back to two workers for the next tests
    _no_duplicate_proposals(env, operator)


def _row(env: Env, run_id: str) -> dict[str, Any]:
    from sqlalchemy import text

    with env.db.engine.connect() as conn:
        row = conn.execute(
            text("SELECT worker_id, attempts, status FROM match_runs WHERE id = :id"),
            {"id": run_id},
        ).one()
    return dict(row._mapping)


def _no_duplicate_proposals(env: Env, key: Key) -> None:
    from sqlalchemy import text

    with env.db.engine.connect() as conn:
        dupes = conn.execute(
            text(
                "SELECT project_id, role, count(*) FROM proposals "
                "WHERE status IN ('proposed', 'accepted') GROUP BY project_id, role "
                "HAVING count(*) > 1"
            )
        ).all()
    assert dupes == []


def test_dry_run_leaves_every_table_unchanged(services_env: Env) -> None:
    env = services_env
    operator = env.fresh(SMALL)
    before = table_rows(env.db, MARKET_TABLES)
    run = _submit(env, operator, params={"time_limit_s": 2}, dry_run=True)
    final = wait_run(env.client, operator, run["id"], FINAL)
    assert final["status"] == "succeeded" and final["summary"]["placed"] > 0
    assert final["summary"]["commit"] is None
    assert table_rows(env.db, MARKET_TABLES) == before


def test_deterministic_replay_is_identical(services_env: Env) -> None:
    env = services_env
    operator = env.fresh(SMALL)
    params = {"time_limit_s": 2, "deterministic": True, "seed": 7, "workers": 1}
    run = _submit(env, operator, params=params, dry_run=True)
    first = wait_run(env.client, operator, run["id"], FINAL)
    assert first["status"] == "succeeded"
    replay = http_ok(
        env.client.post(f"/v1/match-runs/{run['id']}/replay", headers=operator.headers), 202
    )
    assert replay["replay_of"] == run["id"] and replay["dry_run"] is True
    second = wait_run(env.client, operator, replay["id"], FINAL)
    assert second["status"] == "succeeded"
    assert second["summary"]["replay_identical"] is True
    assert second["summary"]["result_hash"] == first["summary"]["result_hash"]
    assert second["audit"]["snapshot_hash"] == first["audit"]["snapshot_hash"]
    strip = [
        {k: v for k, v in a.items() if k != "outcome"}
        for a in _all(env, operator, run["id"], "assignments")
    ]
    again = [
        {k: v for k, v in a.items() if k != "outcome"}
        for a in _all(env, operator, replay["id"], "assignments")
    ]
    assert strip == again


def test_redis_flushed_mid_run_loses_no_run(
    pg_admin: PgAdmin, worker_id: str, tmp_path: Path
) -> None:
    """FLUSHALL on a private redis-server while one run solves and another waits in the
    queue: the first finishes, the second's lost message is re-sent by the reaper."""
    db_url = pg_admin.create_database(f"flush{worker_id}")
    prefix = "cdmo-flush:"
    with private_redis(tmp_path) as (url, _proc):
        settings = make_settings(
            db_url, url, tmp_path, prefix, runs=RunsSettings(**fast_runs_settings())
        )
        services, client = _open(settings)
        workers = Workers(worker_env(db_url, url, prefix), tmp_path)
        workers.start(1)
        try:
            with client:
                env = Env("flush", client, services.db, settings, workers)
                operator = env.fresh(BUSY)
                first = _submit(env, operator, params={"time_limit_s": 6})
                second = _submit(env, operator, params={"time_limit_s": 2}, dry_run=True)
                wait_run(client, operator, first["id"], {"running"}, timeout_s=60)
                assert (
                    http_ok(client.get(f"/v1/match-runs/{second['id']}", headers=operator.headers))[
                        "status"
                    ]
                    == "queued"
                )
                redis.Redis.from_url(url).flushall()
                one = wait_run(client, operator, first["id"], FINAL, timeout_s=90)
                two = wait_run(client, operator, second["id"], FINAL, timeout_s=90)
                assert one["status"] == "succeeded", (one, workers.logs())
                assert two["status"] == "succeeded", (two, workers.logs())
        finally:
            workers.stop()
