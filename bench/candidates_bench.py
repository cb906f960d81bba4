"""Instant candidates: server-side latency at 10000 sites x 12 months, against /health.

    python -m bench.candidates_bench                       # 10000 sites x 12 months, SQLite
    python -m bench.candidates_bench --sites 2000 --runs 3 --requests 100
    python -m bench.candidates_bench --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench

A market is generated (matcher.generate) and written straight into a fresh database (sites,
listings, open projects); the real app (create_app: authentication, rate limit, request
slots, the candidates flow and its per-version cache) then serves, in-process over ASGI,
interleaved requests to ``GET /health`` (the trivial baseline), ``GET /v1/projects/{id}``
(the same authenticated stack and a one-row read, for scale), ``GET
/v1/projects/{id}/candidates?limit=10`` (each request a different project, so a different
window, category and load) and ``POST /v1/candidates`` (a draft body). Server-side latency
is measured by an outermost ASGI middleware, from the request's arrival to the end of its
response. Each run gives p50 and p99 per endpoint; the table shows the median over runs and
the ratio to /health in the same run. The first request, which encodes the site side of
the market version (once per version), is reported on its own.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import insert

from matcher.generate import generate_market
from schemas.api import OrganisationCreate, OrgKind
from service import repositories as repo
from service.app import create_app
from service.config import RateLimitSettings, Settings
from service.db import bump_market_version, upgrade
from service.models import Listing, Organisation, Project, Site
from service.runtime import build_services

ENDPOINTS = ("health", "read", "project", "draft")


class ServerTimer:
    """Outermost ASGI middleware: seconds from a request's arrival to its last body byte."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.samples: list[float] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        await self.app(scope, receive, send)
        self.samples.append(time.perf_counter() - t0)


def _load(settings: Settings, snapshot: Any) -> tuple[str, list[str]]:
    """Write the market into the database; returns an operator key and the project ids."""
    services = build_services(settings)
    upgrade(services.db.engine)
    secret = settings.auth.hmac_secret.get_secret_value()
    now = dt.datetime.now(dt.UTC)
    with services.db.session() as session:
        operator = repo.orgs.create_org(
            session=session, org_in=OrganisationCreate(name="bench operator", kind=OrgKind.OPERATOR)
        )
        _, key = repo.orgs.create_api_key(session=session, org=operator, label="b", secret=secret)
        cdmos = sorted({s.cdmo_id for s in snapshot.sites})
        makers = sorted({p.maker_id for p in snapshot.projects})
        orgs = [(c, "cdmo") for c in cdmos] + [(m, "maker") for m in makers]
        session.execute(
            insert(Organisation),
            [{"id": i, "name": i, "kind": k, "created_at": now} for i, k in orgs],
        )
        session.execute(
            insert(Site),
            [
                {**s.model_dump(mode="json"), "version": 1, "created_at": now, "updated_at": now}
                for s in snapshot.sites
            ],
        )
        rows = [
            {**x.model_dump(mode="json"), "id": f"lst_{n}", "version": 1, "created_at": now,
             "updated_at": now}
            for n, x in enumerate(snapshot.listings)
        ]  # fmt: skip
        for lo in range(0, len(rows), 20_000):
            session.execute(insert(Listing), rows[lo : lo + 20_000])
        session.execute(
            insert(Project),
            [
                {**p.model_dump(mode="json"), "title": p.title or f"project {p.id}",
                 "status": "open", "version": 1, "created_at": now, "updated_at": now}
                for p in snapshot.projects
            ],
        )  # fmt: skip
        bump_market_version(session)
        session.commit()
    services.close()
    return key, [p.id for p in snapshot.projects]


def _draft(project: Any) -> dict[str, Any]:
    """The project as a POST /v1/projects body (an operator names its maker)."""
    body = project.model_dump(mode="json", exclude={"id"})
    return {**body, "title": body["title"] or f"draft of {project.id}"}


def _percentiles(samples: list[float]) -> tuple[float, float]:
    a = np.asarray(samples) * 1000.0
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def _profile(app: Any, project_ids: list[str], n: int) -> None:
    """cProfile of the project-candidates request path below HTTP, on this thread (the test
    client runs the app on another): the project's read, the supply version, the kernels,
    the serialisation. Authentication is a cache hit in the middleware (see /health's ratio)."""
    import cProfile
    import pstats

    from service.flows import candidates as flow
    from service.models import Project

    db = app.state.services.db
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(n):
        with db.session(write=False) as session:
            project = session.get(Project, project_ids[i % len(project_ids)])
            assert project is not None
            body = flow.project_candidates(db=db, session=session, project=project, limit=10)
        body.model_dump_json()
    profiler.disable()
    print(f"\nprofile of {n} project-candidates requests (below HTTP):")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=10_000)
    ap.add_argument("--months", type=int, default=12)
    ap.add_argument("--projects", type=int, default=300, help="distinct projects queried")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--requests", type=int, default=200, help="per endpoint per run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--database-url", default=None, help="an EMPTY database (default SQLite)")
    ap.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="also profile N project-candidates requests (cProfile, top functions by "
        "cumulative time: auth, DB read, kernel call, serialisation)",
    )
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    snapshot = generate_market(args.projects, args.sites, months=args.months, seed=args.seed)
    print(
        f"market: {len(snapshot.sites)} sites, {len(snapshot.listings)} listings, "
        f"{len(snapshot.projects)} projects, {args.months} months "
        f"(generated in {time.perf_counter() - t0:.1f} s)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            env="test",
            database_url=args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}",
            redis_url=None,
            data_dir=Path(tmp),
            rate_limit=RateLimitSettings(requests=10_000_000, window_s=3600),
        )
        t0 = time.perf_counter()
        key, project_ids = _load(settings, snapshot)
        print(f"loaded into {settings.effective_database_url.split(':')[0]} "
              f"in {time.perf_counter() - t0:.1f} s")  # fmt: skip
        app = create_app(settings)
        timer = ServerTimer(app)
        headers = {"Authorization": f"Bearer {key}"}
        drafts = [_draft(p) for p in snapshot.projects]
        with TestClient(timer) as client:  # type: ignore[arg-type]

            def call(kind: str, i: int) -> None:
                if kind == "health":
                    r = client.get("/health")
                elif kind == "read":
                    pid = project_ids[i % len(project_ids)]
                    r = client.get(f"/v1/projects/{pid}", headers=headers)
                elif kind == "project":
                    pid = project_ids[i % len(project_ids)]
                    r = client.get(f"/v1/projects/{pid}/candidates?limit=10", headers=headers)
                else:
                    r = client.post("/v1/candidates?limit=10", json=drafts[i % len(drafts)],
                                    headers=headers)  # fmt: skip
                assert r.status_code == 200, (kind, r.status_code, r.text[:300])

            timer.samples.clear()
            call("project", 0)  # encodes the site side of this market version
            print(f"first request (encodes the site side once per version): "
                  f"{timer.samples[-1]:.2f} s")  # fmt: skip
            for kind in ENDPOINTS:  # warm every path once
                call(kind, 1)
            per_run: list[dict[str, tuple[float, float]]] = []
            loads = []
            for run in range(args.runs):
                samples: dict[str, list[float]] = {k: [] for k in ENDPOINTS}
                for i in range(args.requests):
                    for kind in ENDPOINTS:  # interleaved: load noise hits all alike
                        timer.samples.clear()
                        call(kind, run * args.requests + i)
                        samples[kind].append(timer.samples[-1])
                per_run.append({k: _percentiles(v) for k, v in samples.items()})
                loads.append(os.getloadavg()[0])
            if args.profile:
                _profile(app, project_ids, args.profile)
    cores = os.cpu_count()
    print(
        f"\n{args.runs} runs x {args.requests} requests per endpoint; load average during "
        f"runs {min(loads):.1f}-{max(loads):.1f} on {cores} cores\n"
    )
    print("| endpoint | p50 ms | p99 ms | p50 / health | p99 / health |")
    print("|---|---:|---:|---:|---:|")
    names = {
        "health": "GET /health",
        "read": "GET /v1/projects/{id}",
        "project": "GET /v1/projects/{id}/candidates?limit=10",
        "draft": "POST /v1/candidates?limit=10",
    }
    for kind in ENDPOINTS:
        p50 = statistics.median(r[kind][0] for r in per_run)
        p99 = statistics.median(r[kind][1] for r in per_run)
        r50 = statistics.median(r[kind][0] / r["health"][0] for r in per_run)
        r99 = statistics.median(r[kind][1] / r["health"][1] for r in per_run)
        print(f"| {names[kind]} | {p50:.2f} | {p99:.2f} | {r50:.1f} | {r99:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
