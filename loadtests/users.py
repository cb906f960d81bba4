"""Locust users that behave like the marketplace's parties (HTTP only).

Each simulated user is one organisation with its own API key, created in ``on_start`` through
the operator key (``CDMO_OPERATOR_KEY``), so rate limits, visibility and idempotency are
exercised per tenant as in production.

* :class:`MakerUser` posts projects (with an Idempotency-Key, retried once on a network
  error or 503 as a real client would), edits them with If-Match, reads them back, lists.
* :class:`CdmoUser` registers a site and a year of listings, then keeps its capacity up to
  date: PATCH with If-Match, and on 412 re-reads and retries (bounded).
* :class:`OperatorUser` starts match runs and follows them until they end (the match-runs
  API arrives with the svc-runs branch: until then its calls answer 404, which is counted as
  "not available" rather than as a failure).

Run through ``python -m loadtests.run scenario`` (see loadtests/run.py), or directly:
``locust -f loadtests/users.py --host URL`` with ``CDMO_OPERATOR_KEY`` set.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from typing import Any

from locust import FastHttpUser, between, task

from loadtests.bodies import MONTHS, PROCESSES, listing_body, project_body, run_body, site_body

SETUP = "setup: "  # request names starting with this are excluded from the summary
MAX_412_RETRIES = 3


class _Tenant(FastHttpUser):
    abstract = True
    kind = ""

    def on_start(self) -> None:
        auth = {"Authorization": f"Bearer {os.environ['CDMO_OPERATOR_KEY']}"}
        name = f"load {self.kind} {uuid.uuid4().hex[:12]}"
        org = self.setup("POST", "/v1/orgs", json={"name": name, "kind": self.kind}, headers=auth)
        key = self.setup("POST", f"/v1/orgs/{org['id']}/keys", json={"label": "load"}, headers=auth)
        self.org_id = org["id"]
        self.headers = {"Authorization": f"Bearer {key['key']}"}

    def setup(self, method: str, path: str, **kw: Any) -> Any:
        """A setup request (excluded from the figures); a shed 503 is retried as clients do."""
        name = SETUP + "/".join(path.split("/")[:3])
        for _ in range(20):
            r = self.client.request(method, path, name=name, **kw)
            if r.status_code != 503:
                break
            time.sleep(float(r.headers.get("Retry-After") or 1))
        if r.status_code not in (200, 201):
            raise RuntimeError(f"setup {method} {path}: {r.status_code} {(r.text or '')[:200]}")
        return r.json()

    def call(
        self, method: str, path: str, name: str, ok: tuple[int, ...] = (200,), **kw: Any
    ) -> Any:
        headers = {**self.headers, **kw.pop("headers", {})}
        with self.client.request(
            method, path, name=name, headers=headers, catch_response=True, **kw
        ) as response:
            if response.status_code in ok:
                response.success()
            else:
                response.failure(f"{response.status_code}: {(response.text or '')[:200]}")
            return response


class MakerUser(_Tenant):
    kind = "maker"
    weight = 5
    wait_time = between(1, 4)  # a person or an integration, not a loop

    def on_start(self) -> None:
        super().on_start()
        self.projects: list[dict[str, Any]] = []
        for _ in range(3):
            self.post_project()

    @task(2)
    def post_project(self) -> None:
        body, key = project_body(), str(uuid.uuid4())
        for attempt in range(2):  # one retry with the same key: never a duplicate
            r = self.call(
                "POST",
                "/v1/projects",
                "POST /v1/projects",
                ok=(201,),
                json=body,
                headers={"Idempotency-Key": key},
            )
            if r.status_code == 201:
                self.projects.append(r.json())
                return
            if r.status_code != 503 or attempt:
                return
            time.sleep(float(r.headers.get("Retry-After", "1")))

    @task(6)
    def read_project(self) -> None:
        if self.projects:
            project = random.choice(self.projects)
            self.call("GET", f"/v1/projects/{project['id']}", "GET /v1/projects/{id}")

    @task(3)
    def list_projects(self) -> None:
        self.call("GET", "/v1/projects?limit=50", "GET /v1/projects")

    @task(2)
    def edit_project(self) -> None:
        if not self.projects:
            return
        i = random.randrange(len(self.projects))
        project = self.projects[i]
        r = self.call(
            "PATCH",
            f"/v1/projects/{project['id']}",
            "PATCH /v1/projects/{id}",
            ok=(200,),
            json={"priority": random.randint(1, 10)},
            headers={"If-Match": f'"{project["version"]}"'},
        )
        if r.status_code == 200:
            self.projects[i] = r.json()

    @task(1)
    def candidates(self) -> None:
        # GET /v1/projects/{id}/candidates (instant candidates) does not exist yet; when it
        # does: self.call("GET", f"/v1/projects/{id}/candidates", "GET .../candidates")
        pass


class CdmoUser(_Tenant):
    kind = "cdmo"
    weight = 3
    wait_time = between(2, 6)

    def on_start(self) -> None:
        super().on_start()
        site = self.setup(
            "POST", "/v1/sites", json=site_body(f"site {self.org_id}"), headers=self.headers
        )
        self.listings: list[dict[str, Any]] = []
        for process in PROCESSES[:2]:
            for month in MONTHS[:6]:
                listing = self.setup(
                    "POST",
                    f"/v1/sites/{site['id']}/listings",
                    json=listing_body(process, month),
                    headers=self.headers,
                )
                self.listings.append(listing)

    @task(3)
    def update_capacity(self) -> None:
        if not self.listings:
            return
        i = random.randrange(len(self.listings))
        listing = self.listings[i]
        for _ in range(MAX_412_RETRIES):
            capacity = max(listing["reserved_hours"], random.choice([400, 600, 800, 1000]))
            r = self.call(
                "PATCH",
                f"/v1/listings/{listing['id']}",
                "PATCH /v1/listings/{id}",
                ok=(200, 412),  # 412: someone wrote first; re-read and retry below
                json={"capacity_hours": capacity},
                headers={"If-Match": f'"{listing["version"]}"'},
            )
            if r.status_code != 412:
                if r.status_code == 200:
                    self.listings[i] = r.json()
                return
            listing = self.call(
                "GET", f"/v1/listings/{listing['id']}", "GET /v1/listings/{id}"
            ).json()
            self.listings[i] = listing

    @task(2)
    def browse_listings(self) -> None:
        self.call("GET", "/v1/listings?limit=100", "GET /v1/listings")

    @task(1)
    def proposals(self) -> None:
        self.call("GET", "/v1/proposals", "GET /v1/proposals")


class OperatorUser(_Tenant):
    """Operators are people at the marketplace; they use the operator key itself."""

    kind = "operator"
    weight = 1
    wait_time = between(5, 15)

    def on_start(self) -> None:
        self.headers = {"Authorization": f"Bearer {os.environ['CDMO_OPERATOR_KEY']}"}

    @task(3)
    def start_and_follow_run(self) -> None:
        r = self.call(
            "POST",
            "/v1/match-runs",
            "POST /v1/match-runs",
            ok=(202, 404),  # 404: the match-runs API is not deployed in this build
            json=run_body(),
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
        if r.status_code != 202:
            return
        run_id = r.json()["id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            run = self.call("GET", f"/v1/match-runs/{run_id}", "GET /v1/match-runs/{id}").json()
            if run.get("status") in ("succeeded", "failed", "cancelled"):
                return
            time.sleep(1)

    @task(2)
    def list_runs(self) -> None:
        self.call("GET", "/v1/match-runs?limit=20", "GET /v1/match-runs", ok=(200, 404))

    @task(1)
    def market_version(self) -> None:
        self.call("GET", "/v1/market/version", "GET /v1/market/version")
