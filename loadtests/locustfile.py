"""Locust users for the marketplace API: makers reading, CDMOs updating capacity, operators
taking snapshots.

    cdmo serve --demo                     # prints the demo keys
    export CDMO_RATE_LIMIT__REQUESTS=100000   # on the server: one key per role is shared
    CDMO_MAKER_KEY=ck_... CDMO_CDMO_KEY=ck_... CDMO_OPERATOR_KEY=ck_... \\
      locust -f loadtests/locustfile.py --host http://127.0.0.1:8000 --headless -u 20 -r 5 -t 1m

A stale listing write (412) is expected under contention and counted as a success: the client
re-reads and moves on, exactly what a real CDMO integration must do.
"""

from __future__ import annotations

import os
import random
from typing import Any

from locust import HttpUser, between, task


def _key(role: str) -> str:
    key = os.environ.get(f"CDMO_{role.upper()}_KEY", "")
    if not key:
        raise RuntimeError(f"set CDMO_{role.upper()}_KEY (see `cdmo serve --demo` output)")
    return key


class _ApiUser(HttpUser):
    abstract = True
    role = ""
    wait_time = between(0.05, 0.5)

    def on_start(self) -> None:
        self.client.headers["Authorization"] = f"Bearer {_key(self.role)}"

    def _items(self, path: str, name: str) -> list[dict[str, Any]]:
        with self.client.get(path, name=name, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return []
            return list(response.json()["items"])


class MakerUser(_ApiUser):
    role = "maker"
    weight = 3

    @task(3)
    def list_projects(self) -> None:
        projects = self._items("/v1/projects?limit=50", "/v1/projects")
        if projects:
            project = random.choice(projects)
            self.client.get(f"/v1/projects/{project['id']}", name="/v1/projects/{id}")

    @task(1)
    def filter_projects(self) -> None:
        market = random.choice(["CN", "EU", "US", "SEA"])
        self._items(f"/v1/projects?market={market}&status=open", "/v1/projects?market")

    @task(1)
    def cdmo_directory(self) -> None:
        self._items("/v1/cdmos", "/v1/cdmos")


class CdmoUser(_ApiUser):
    role = "cdmo"
    weight = 3

    @task(2)
    def browse_listings(self) -> None:
        self._items("/v1/listings?limit=100", "/v1/listings")

    @task(3)
    def update_capacity(self) -> None:
        listings = self._items("/v1/listings?limit=100", "/v1/listings")
        if not listings:
            return
        listing = random.choice(listings)
        capacity = max(
            listing["reserved_hours"], listing["capacity_hours"] * random.uniform(0.9, 1.1)
        )
        with self.client.patch(
            f"/v1/listings/{listing['id']}",
            json={"capacity_hours": round(capacity, 1)},
            headers={"If-Match": f'"{listing["version"]}"'},
            name="/v1/listings/{id} PATCH",
            catch_response=True,
        ) as response:
            if response.status_code in (200, 412):  # 412: someone wrote first; re-read later
                response.success()
            else:
                response.failure(f"{response.status_code}: {response.text[:200]}")


class OperatorUser(_ApiUser):
    role = "operator"
    weight = 1

    @task
    def snapshot(self) -> None:
        with self.client.get(
            "/v1/market/snapshot", name="/v1/market/snapshot", catch_response=True
        ) as response:
            if response.status_code != 200 or "version" not in response.json():
                response.failure(f"{response.status_code}")
