"""Closed-loop capacity phases: every user sends one kind of request back to back (no think
time), so the throughput measured is the server's, for that endpoint. ``CDMO_LOAD_TARGET``
names the endpoint (see TARGETS); the runner (loadtests/run.py) runs one phase per target and
divides each throughput by the trivial endpoint's (``GET /health``) measured in the same run.

Each user is its own organisation (created in ``on_start``, excluded from the figures).
"""

from __future__ import annotations

import os
import random
import time
import uuid
from typing import Any

from locust import FastHttpUser, constant, task

from loadtests.bodies import PROCESSES, listing_body, project_body, site_body

SETUP = "setup: "

TARGETS = {
    "health": "GET /health",
    "get_project": "GET /v1/projects/{id}",
    "list_projects": "GET /v1/projects",
    "patch_listing": "PATCH /v1/listings/{id}",
    "post_project": "POST /v1/projects",
}
READS = ("get_project", "list_projects")
WRITES = ("patch_listing", "post_project")


class CapacityUser(FastHttpUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        self.target = os.environ.get("CDMO_LOAD_TARGET", "health")
        if self.target not in TARGETS:
            raise RuntimeError(f"CDMO_LOAD_TARGET must be one of {sorted(TARGETS)}")
        if self.target == "health":
            return
        operator = {"Authorization": f"Bearer {os.environ['CDMO_OPERATOR_KEY']}"}
        kind = "cdmo" if self.target == "patch_listing" else "maker"
        org = self._json(
            "POST",
            "/v1/orgs",
            json={"name": f"cap {kind} {uuid.uuid4().hex[:12]}", "kind": kind},
            headers=operator,
        )
        key = self._json(
            "POST", f"/v1/orgs/{org['id']}/keys", json={"label": "cap"}, headers=operator
        )
        self.headers = {"Authorization": f"Bearer {key['key']}"}
        if kind == "maker":
            self.projects = [
                self._json("POST", "/v1/projects", json=project_body(), headers=self.headers)
                for _ in range(5)
            ]
        else:
            site = self._json(
                "POST", "/v1/sites", json=site_body(f"cap {org['id']}"), headers=self.headers
            )
            self.listings = [
                self._json(
                    "POST",
                    f"/v1/sites/{site['id']}/listings",
                    json=listing_body(process, f"2027-0{m}"),
                    headers=self.headers,
                )
                for process in PROCESSES[:1]
                for m in range(1, 4)
            ]

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        for _ in range(20):  # a shed request (503) is retried after Retry-After, as clients do
            r = self.client.request(method, path, name=SETUP + path.split("/")[2], **kw)
            if r.status_code != 503:
                break
            time.sleep(float(r.headers.get("Retry-After", "1")))
        if r.status_code not in (200, 201):
            raise RuntimeError(f"setup {method} {path}: {r.status_code} {r.text[:200]}")
        return r.json()

    @task
    def hit(self) -> None:
        r = getattr(self, self.target)()
        if r.status_code == 503:  # shed: a client waits as Retry-After says before its next call
            time.sleep(float(r.headers.get("Retry-After") or 1))

    def health(self) -> Any:
        return self.client.get("/health", name=TARGETS["health"])

    def get_project(self) -> Any:
        project = random.choice(self.projects)
        return self.client.get(
            f"/v1/projects/{project['id']}", headers=self.headers, name=TARGETS["get_project"]
        )

    def list_projects(self) -> Any:
        return self.client.get(
            "/v1/projects?limit=20", headers=self.headers, name=TARGETS["list_projects"]
        )

    def post_project(self) -> Any:
        return self.client.post(
            "/v1/projects", json=project_body(), headers=self.headers, name=TARGETS["post_project"]
        )

    def patch_listing(self) -> Any:
        i = random.randrange(len(self.listings))
        listing = self.listings[i]
        with self.client.patch(
            f"/v1/listings/{listing['id']}",
            json={"capacity_hours": random.choice([400, 600, 800])},
            headers={**self.headers, "If-Match": f'"{listing["version"]}"'},
            name=TARGETS["patch_listing"],
            catch_response=True,
        ) as r:
            if r.status_code == 200:
                self.listings[i] = r.json()
            elif r.status_code == 412:  # only this user writes its listings: should not happen
                r.failure("412")
        return r
