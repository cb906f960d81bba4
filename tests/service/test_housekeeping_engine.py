"""Expiry and webhook delivery as periodic jobs of the engine (README, "Deals").

* With Redis: two API processes (app instances) sweep nothing themselves; two real
  ``cdmo scheduler`` processes (an overlap, as in a botched rollout) and two real
  ``cdmo worker`` processes expire every proposal due, with exactly one sweep per period
  (each period claimed once) and exactly one ``proposal.expired`` event per party.
* Embedded (no Redis): the API process's own clock expires them (the same sweep function).
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from runs_testkit import Workers, worker_env
from service_testkit import Api, Backend, ok, open_backend
from sqlalchemy import update
from sqlmodel import col, select

from service.app import create_app
from service.models import OrgEvent, Proposal
from service.runtime import build_services

MONTHS = ("2027-01", "2027-02", "2027-03")
CLAIMED = re.compile(r"housekeeping expire period (\d+): claimed")
SKIPPED = re.compile(r"housekeeping expire period (\d+): already claimed")


def _market(api: Api, n: int) -> list[dict[str, Any]]:
    maker, cdmo = api.maker(), api.cdmo()
    site = api.site(cdmo)
    for month in MONTHS:
        api.listing(cdmo, site["id"], month=month, capacity_hours=5000, reserved_hours=0)
    return [api.propose(api.project(maker)["id"], site["id"]) for _ in range(n)]


def _backdate(db: Any, ids: list[str], days: float) -> None:
    with db.session() as session:
        session.execute(
            update(Proposal)
            .where(col(Proposal.id).in_(ids))
            .values(updated_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=days))
        )
        session.commit()


def _statuses(db: Any, ids: list[str]) -> dict[str, str]:
    with db.session(write=False) as session:
        rows = session.exec(
            select(Proposal.id, Proposal.status).where(col(Proposal.id).in_(ids))
        ).all()
    return dict(rows)


def _wait(predicate: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return bool(predicate())


def test_two_api_processes_two_schedulers_two_workers_expire_once_per_period(
    request: pytest.FixtureRequest, tmp_path: Path, key_prefix: str
) -> None:
    prefix = f"{key_prefix}hk{uuid.uuid4().hex[:6]}:"
    settings, services = open_backend(request, "services", tmp_path, prefix)
    other = build_services(settings)
    apps = [create_app(settings, services), create_app(settings, other)]
    with TestClient(apps[0]) as client, TestClient(apps[1]):
        api = Api(Backend("services", settings, services, client, prefix))
        proposals = _market(api, 4)
        ids = [p["id"] for p in proposals]
        _backdate(services.db, ids, settings.deals.proposal_ttl_s / 86400 + 1)

        # Both API processes are up, with a 30 s default interval and nothing else running:
        # they never sweep (with Redis, expiry is the workers' job).
        time.sleep(2.0)
        assert set(_statuses(services.db, ids).values()) == {"proposed"}

        env = worker_env(
            settings.effective_database_url,
            settings.redis_url or "",
            prefix,
            CDMO_DEALS__EXPIRY_INTERVAL_S="1",
            CDMO_NOTIFICATIONS__POLL_INTERVAL_S="1",
        )
        workers = Workers(env, tmp_path)
        cdmo = Path(sys.executable).parent / "cdmo"
        schedulers: list[subprocess.Popen[bytes]] = []
        try:
            workers.start(2)
            for i in range(2):
                log = open(tmp_path / f"scheduler-{i}.log", "wb")  # noqa: SIM115
                schedulers.append(
                    subprocess.Popen(
                        [str(cdmo), "scheduler"], env=env, stdout=log, stderr=subprocess.STDOUT
                    )
                )
            expired = _wait(lambda: set(_statuses(services.db, ids).values()) == {"expired"}, 180)
            assert expired, workers.logs()
            # A few more periods (they find nothing, still one sweep each), at least until a
            # second scheduler's message for a period was refused (a loaded machine may start
            # the second scheduler late).
            time.sleep(3.0)
            _wait(lambda: SKIPPED.search(workers.logs(tail=None)) is not None, 60)
        finally:
            for proc in schedulers:
                proc.terminate()
            for proc in schedulers:
                proc.wait(timeout=15)
            workers.stop()
        logs = workers.logs(tail=None)  # every period's line, not only the last ones

        claimed = Counter(int(p) for p in CLAIMED.findall(logs))
        skipped = Counter(int(p) for p in SKIPPED.findall(logs))
        assert claimed, logs
        assert max(claimed.values()) == 1, f"a period swept twice: {claimed}"
        # both schedulers sent every period: the second message of a period was refused
        assert sum(skipped.values()) >= 1 and set(skipped) <= set(claimed), (claimed, skipped)

        with services.db.session(write=False) as session:
            events = session.exec(
                select(OrgEvent.org_id, OrgEvent.data).where(OrgEvent.kind == "proposal.expired")
            ).all()
        per_party = Counter((org, data["proposal_id"]) for org, data in events)
        assert {pid for _, pid in per_party} == set(ids)
        assert set(per_party.values()) == {1}, "one proposal.expired per party and proposal"
        assert len(per_party) == 2 * len(ids)  # the maker and the CDMO of each
    other.close()


def test_embedded_api_process_expires_on_its_own_clock(
    request: pytest.FixtureRequest, tmp_path: Path, key_prefix: str
) -> None:
    settings, services = open_backend(
        request,
        "embedded",
        tmp_path,
        key_prefix,
    )
    settings.deals.expiry_interval_s = 0.3
    with TestClient(create_app(settings, services)) as client:
        api = Api(Backend("embedded", settings, services, client, key_prefix))
        proposals = _market(api, 2)
        ids = [p["id"] for p in proposals]
        _backdate(services.db, ids, settings.deals.proposal_ttl_s / 86400 + 1)
        assert _wait(lambda: set(_statuses(services.db, ids).values()) == {"expired"}, 20)
        assert ok(api.operator.get(f"/v1/proposals/{ids[0]}"))["status"] == "expired"
