"""Match runs through HTTP without workers consuming the queue: the job is run here, in a
thread, where a test needs to step in (a capacity update racing the commit, a commit that
crashes half-way); and bad input and limits, each a problem+json with nothing written.
Against real PostgreSQL and Redis."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from runs_testkit import (
    FINAL,
    SMALL,
    Key,
    fast_runs_settings,
    http_ok,
    load_generated,
    make_key,
    reset_tables,
    table_rows,
    wait_run,
)
from service_testkit import PgAdmin, assert_problem, make_settings
from sqlalchemy import text

from schemas.api import OrgKind, RunStatus, RunSummary
from schemas.market import Role
from service import repositories as repo
from service.app import create_app
from service.config import RunsSettings, Settings
from service.db import Database, upgrade
from service.flows import commit_run
from service.flows.capacity import placement_hours
from service.flows.match_run import RunContext, execute
from service.jobs.events import make_event_channel
from service.models import Project, utcnow
from service.runtime import build_services

MAX_ACTIVE = 2


class Env:
    def __init__(self, client: TestClient, db: Database, settings: Settings) -> None:
        self.client, self.db, self.settings = client, db, settings
        self._contexts: dict[float, RunContext] = {}

    def ctx(self, commit_delay_s: float = 0.0) -> RunContext:
        """One context per delay, as a worker process has one (each owns a heartbeat
        process)."""
        if commit_delay_s not in self._contexts:
            events = make_event_channel(
                self.settings.redis_url, db=self.db, prefix=self.settings.redis.key_prefix
            )
            self._contexts[commit_delay_s] = RunContext(
                self.db, events, self.settings.runs, commit_delay_s=commit_delay_s
            )
        return self._contexts[commit_delay_s]


@pytest.fixture(scope="module")
def env(
    pg_admin: PgAdmin, redis_url: str, worker_id: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    tmp: Path = tmp_path_factory.mktemp("runs-api")
    db_url = pg_admin.create_database(f"runsapi{worker_id}")
    prefix = f"cdmo-test:runsapi:{uuid.uuid4().hex[:8]}:"
    runs = RunsSettings(
        **fast_runs_settings(
            max_active_runs=MAX_ACTIVE,
            max_time_limit_s=60,
            requeue_after_s=3600,
            reaper_interval_s=3600,  # reaped by hand here, where a test wants it
        )
    )
    settings = make_settings(db_url, redis_url, tmp, prefix, runs=runs)
    services = build_services(settings)
    upgrade(services.db.engine)
    with TestClient(create_app(settings, services)) as client:
        yield Env(client, services.db, settings)


@pytest.fixture
def operator(env: Env) -> Key:
    reset_tables(env.db)
    load_generated(env.db, **SMALL)
    return make_key(env.db, env.settings, kind=OrgKind.OPERATOR)


def _post(env: Env, key: Key, body: dict[str, Any]) -> Any:
    return env.client.post("/v1/match-runs", json=body, headers=key.headers)


def _run_in_thread(env: Env, run_id: str, commit_delay_s: float = 0.0) -> threading.Thread:
    thread = threading.Thread(target=execute, args=(env.ctx(commit_delay_s), run_id), daemon=True)
    thread.start()
    return thread


def _held_hours_fit(env: Env) -> None:
    """Nothing reserved twice: per listing, the whole hours of the active proposals fit in
    its free capacity."""
    from service.flows.capacity import free_whole_hours

    with env.db.session(write=False) as session:
        rows = session.execute(
            text(
                "SELECT p.project_id, p.site_id, p.role FROM proposals p "
                "WHERE p.status IN ('proposed', 'accepted')"
            )
        ).all()
        used: dict[tuple[str, str, str], int] = {}
        for project_id, site_id, role in rows:
            project = session.get(Project, project_id)
            for key, hours in placement_hours(project, site_id, Role(role)).items():
                used[key] = used.get(key, 0) + hours
        free = {
            (s, p, m): free_whole_hours(c, r)
            for s, p, m, c, r in session.execute(
                text("SELECT site_id, process, month, capacity_hours, reserved_hours FROM listings")
            )
        }
    over = {k: (v, free.get(k, 0)) for k, v in used.items() if v > free.get(k, 0)}
    assert not over, over


def test_capacity_update_racing_the_commit_is_skipped_with_the_reason(
    env: Env, operator: Key
) -> None:
    run = http_ok(_post(env, operator, {"params": {"time_limit_s": 2}}), 202)
    thread = _run_in_thread(env, run["id"], commit_delay_s=3.0)
    wait_run(env.client, operator, run["id"], {"committing"}, timeout_s=60)
    # The answer is persisted; take away all the free capacity of one listing it uses.
    placed = http_ok(
        env.client.get(
            f"/v1/match-runs/{run['id']}/assignments?limit=200", headers=operator.headers
        )
    )["items"]
    victim = placed[0]
    with env.db.session(write=False) as session:
        project = session.get(Project, victim["project_id"])
        key = sorted(placement_hours(project, victim["site_id"], Role(victim["role"])))[0]
    site_id, process, month = key
    listing = http_ok(
        env.client.get(
            f"/v1/listings?site_id={site_id}&process={process}&month_from={month}&month_to={month}",
            headers=operator.headers,
        )
    )["items"][0]
    response = env.client.patch(
        f"/v1/listings/{listing['id']}",
        json={"reserved_hours": listing["capacity_hours"]},
        headers={**operator.headers, "If-Match": f'"{listing["version"]}"'},
    )
    http_ok(response)
    thread.join(timeout=60)
    final = wait_run(env.client, operator, run["id"], FINAL)
    assert final["status"] == "succeeded", final
    commit = final["summary"]["commit"]
    reasons = [s["reason"] for s in commit["skipped"] if s["project_id"] == victim["project_id"]]
    assert reasons and f"capacity changed at site {site_id}" in reasons[0], commit
    assert f"month {month}" in reasons[0]
    assert commit["proposed"] == len(placed) - len(commit["skipped"])
    outcomes = {
        a["project_id"]: a["outcome"]
        for a in http_ok(
            env.client.get(
                f"/v1/match-runs/{run['id']}/assignments?limit=200", headers=operator.headers
            )
        )["items"]
    }
    assert outcomes[victim["project_id"]] == "skipped"
    _held_hours_fit(env)


def test_a_commit_interrupted_by_a_crash_is_retried_without_duplicates(
    env: Env, operator: Key
) -> None:
    run = http_ok(_post(env, operator, {"params": {"time_limit_s": 2}}), 202)
    ctx = env.ctx()
    # Solve and persist as a worker would, then "crash" in the middle of the commit: its
    # transaction never commits.
    with env.db.session() as session:
        row = repo.runs.claim(session=session, run_id=run["id"], token="w1")
        session.commit()
    assert row is not None
    from service.flows.match_run import Heartbeat, _solve_and_persist

    with Heartbeat(ctx, run["id"], "w1") as beat:
        row = _solve_and_persist(ctx, row, "w1", beat)
    assert row.status == RunStatus.COMMITTING.value
    with env.db.session() as session:
        commit_run.commit(
            session, run=row, token="w1", summary=RunSummary.model_validate(row.summary)
        )
        session.rollback()  # the worker died here
        session.execute(
            text("UPDATE match_runs SET heartbeat_at = :t WHERE id = :id"),
            {"t": utcnow() - dt.timedelta(hours=1), "id": run["id"]},
        )
        session.commit()
    with env.db.session() as session:
        actions = repo.runs.reap(
            session=session, heartbeat_timeout_s=5, requeue_after_s=3600, max_attempts=3
        )
        session.commit()
    assert [(a.run_id, a.action) for a in actions] == [(run["id"], "requeued")]
    execute(ctx, run["id"])  # the retry: commits the persisted answer, does not solve again
    final = wait_run(env.client, operator, run["id"], FINAL)
    assert final["status"] == "succeeded" and final["attempts"] == 2
    with env.db.engine.connect() as conn:
        made = conn.execute(
            text("SELECT count(*) FROM proposals WHERE batch_id = :id"), {"id": run["id"]}
        ).scalar_one()
        dupes = conn.execute(
            text(
                "SELECT count(*) FROM (SELECT project_id, role FROM proposals "
                "WHERE status IN ('proposed','accepted') GROUP BY 1, 2 HAVING count(*) > 1) d"
            )
        ).scalar_one()
    assert made == final["summary"]["commit"]["proposed"] > 0
    assert dupes == 0
    _held_hours_fit(env)
    # A second delivery of the same message finds the run final and does nothing.
    execute(ctx, run["id"])
    assert (
        http_ok(env.client.get(f"/v1/match-runs/{run['id']}", headers=operator.headers))["attempts"]
        == 2
    )


def test_a_second_run_moves_proposals_and_supersedes_the_old_ones(env: Env, operator: Key) -> None:
    first = http_ok(_post(env, operator, {"params": {"time_limit_s": 1, "seed": 1}}), 202)
    execute(env.ctx(), first["id"])
    assert wait_run(env.client, operator, first["id"], FINAL)["status"] == "succeeded"
    second = http_ok(_post(env, operator, {"params": {"time_limit_s": 1, "seed": 2}}), 202)
    execute(env.ctx(), second["id"])
    done = wait_run(env.client, operator, second["id"], FINAL)
    commit = done["summary"]["commit"]
    # Stability: the same answer again changes nothing; every placement is accounted for.
    items = http_ok(
        env.client.get(
            f"/v1/match-runs/{second['id']}/assignments?limit=200", headers=operator.headers
        )
    )["items"]
    assert commit["proposed"] + commit["unchanged"] + len(commit["skipped"]) == len(items)
    # Each placement's outcome agrees with the summary (the unchanged ones are the pairs
    # propose_batch found already active at the same site).
    outcomes = Counter(a["outcome"] for a in items)
    assert commit["unchanged"] > 0
    assert outcomes["unchanged"] == commit["unchanged"]
    assert outcomes["proposed"] == commit["proposed"]
    _held_hours_fit(env)
    with env.db.engine.connect() as conn:
        superseded = conn.execute(
            text("SELECT count(*) FROM proposals WHERE status = 'superseded'")
        ).scalar_one()
    assert superseded == commit["superseded"]


# --- bad input and limits: problem+json, nothing written --------------------------------------


def _runs_count(env: Env) -> int:
    with env.db.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM match_runs")).scalar_one())


def test_bad_input_and_limits_are_problems_and_write_nothing(env: Env, operator: Key) -> None:
    before = table_rows(env.db, ["match_runs", "proposals", "projects", "market_state"])
    empty = _post(env, operator, {"scope": {"project_ids": ["no_such_project"]}})
    assert assert_problem(empty, 422, "validation-error")["errors"][0]["field"] == "scope"
    too_long = _post(env, operator, {"params": {"time_limit_s": 61}})
    body = assert_problem(too_long, 422, "validation-error")
    assert body["errors"][0]["field"] == "params.time_limit_s"
    unknown = _post(env, operator, {"params": {"time_limit_s": 1}, "colour": "red"})
    assert_problem(unknown, 422, "validation-error")
    assert table_rows(env.db, ["match_runs", "proposals", "projects", "market_state"]) == before
    # The cap: MAX_ACTIVE runs queued (no worker consumes here), the next one is refused.
    for _ in range(MAX_ACTIVE):
        http_ok(_post(env, operator, {"params": {"time_limit_s": 1}}), 202)
    refused = _post(env, operator, {"params": {"time_limit_s": 1}})
    assert_problem(refused, 429, "too-many-runs")
    assert refused.headers["retry-after"]
    assert _runs_count(env) == MAX_ACTIVE


def test_cancel_of_queued_and_finished_runs(env: Env, operator: Key) -> None:
    run = http_ok(_post(env, operator, {"params": {"time_limit_s": 1}}), 202)
    assert run["queue_position"] == 0
    cancelled = http_ok(
        env.client.post(f"/v1/match-runs/{run['id']}/cancel", headers=operator.headers), 202
    )
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"]
    execute(env.ctx(), run["id"])  # a late delivery of its message does nothing
    again = env.client.post(f"/v1/match-runs/{run['id']}/cancel", headers=operator.headers)
    assert "already cancelled" in assert_problem(again, 409, "invalid-state")["detail"]
    assert (
        http_ok(env.client.get(f"/v1/match-runs/{run['id']}", headers=operator.headers))["attempts"]
        == 0
    )


def test_replay_of_a_pruned_run_is_refused(env: Env, operator: Key) -> None:
    run = http_ok(_post(env, operator, {"params": {"time_limit_s": 1}, "dry_run": True}), 202)
    execute(env.ctx(), run["id"])
    with env.db.session() as session:
        pruned = repo.runs.prune_snapshots(
            session=session, older_than=utcnow() + dt.timedelta(days=1)
        )
        session.commit()
    assert pruned == 1
    count = _runs_count(env)
    refused = env.client.post(f"/v1/match-runs/{run['id']}/replay", headers=operator.headers)
    assert "pruned" in assert_problem(refused, 409, "invalid-state")["detail"]
    assert _runs_count(env) == count
    got = http_ok(env.client.get(f"/v1/match-runs/{run['id']}", headers=operator.headers))
    assert got["audit"]["snapshot_pruned"] is True and got["audit"]["snapshot_hash"]


def test_only_operators_see_runs(env: Env, operator: Key) -> None:
    run = http_ok(_post(env, operator, {"params": {"time_limit_s": 1}}), 202)
    for kind in (OrgKind.MAKER, OrgKind.CDMO):
        other = make_key(env.db, env.settings, kind=kind)
        h = other.headers
        assert_problem(env.client.post("/v1/match-runs", json={}, headers=h), 403, "forbidden")
        for path in (
            "",
            f"/{run['id']}",
            f"/{run['id']}/events",
            f"/{run['id']}/assignments",
            f"/{run['id']}/unassigned",
        ):
            assert_problem(env.client.get(f"/v1/match-runs{path}", headers=h), 404, "not-found")
        for action in ("cancel", "replay"):
            response = env.client.post(f"/v1/match-runs/{run['id']}/{action}", headers=h)
            assert_problem(response, 404, "not-found")
    assert _runs_count(env) == 1


def test_idempotent_submit_returns_the_first_run(env: Env, operator: Key) -> None:
    headers = {**operator.headers, "Idempotency-Key": "run-once-1"}
    body = {"params": {"time_limit_s": 1}}
    first = env.client.post("/v1/match-runs", json=body, headers=headers)
    second = env.client.post("/v1/match-runs", json=body, headers=headers)
    assert first.status_code == second.status_code == 202
    assert second.headers.get("idempotent-replayed") == "true"
    assert first.json()["id"] == second.json()["id"]
    assert first.headers["location"] == second.headers["location"]
    assert _runs_count(env) == 1


def test_check_runs_and_metrics_report_a_stale_run(env: Env, operator: Key) -> None:
    run = http_ok(_post(env, operator, {"params": {"time_limit_s": 1}}), 202)
    with env.db.session() as session:
        assert repo.runs.claim(session=session, run_id=run["id"], token="host:1:dead") is not None
        session.execute(
            text("UPDATE match_runs SET heartbeat_at = :t WHERE id = :id"),
            {"t": utcnow() - dt.timedelta(minutes=5), "id": run["id"]},
        )
        session.commit()
    with env.db.session(write=False) as session:
        problems = repo.runs.check_runs(session, heartbeat_timeout_s=20)
    assert any(run["id"] in p and "silent" in p for p in problems), problems
    # `cdmo check` runs the same invariant among the others.
    from service.checks import run_checks

    outcomes = {o.check.name: o for o in run_checks(env.db)}
    assert any(run["id"] in v for v in outcomes["runs"].violations), outcomes["runs"]
    metrics = env.client.get("/metrics").text
    assert 'cdmo_runs{status="running"} 1.0' in metrics
    assert f'cdmo_run_heartbeat_age_seconds{{run_id="{run["id"]}"}}' in metrics
    # The reaper puts it back in the queue (and re-sends its message).
    from service.jobs.engine import DramatiqEngine
    from service.worker import Reaper

    engine = DramatiqEngine(
        env.settings.redis_url or "",
        namespace=env.settings.redis.key_prefix + "dramatiq",
        queue_name=env.settings.runs.queue_name,
        heartbeat_timeout_s=4,
    )
    ctx = env.ctx()
    actions = Reaper(env.db, engine, ctx.events, env.settings).reap_once()
    engine.close()
    assert [(a.run_id, a.action) for a in actions] == [(run["id"], "requeued")]
    got = http_ok(env.client.get(f"/v1/match-runs/{run['id']}", headers=operator.headers))
    assert got["status"] == "queued" and "re-queued" in got["error"]
    with env.db.session(write=False) as session:
        assert repo.runs.check_runs(session, heartbeat_timeout_s=20) == []
