"""A small HTTP client of the match-runs API for the operator's commands (``cdmo runs``,
``cdmo report``): the same JSON the dashboard reads, so the CLI, the report and the page
agree. Talks HTTP only (httpx); every failure is an :class:`OpsError` with one sentence.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


class OpsError(Exception):
    """One line for the operator; ``code`` is the exit status (2 bad input, 1 otherwise)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Event:
    id: str | None
    kind: str
    data: dict[str, Any]


def parse_sse(lines: Iterator[str]) -> Iterator[Event]:
    """Server-sent events from a stream's lines (comments and keep-alives skipped)."""
    event: dict[str, Any] = {"id": None, "kind": "message", "data": ""}
    for line in lines:
        if line == "":
            if event["data"]:
                yield Event(event["id"], event["kind"], json.loads(event["data"]))
            event = {"id": None, "kind": "message", "data": ""}
        elif line.startswith("id:"):
            event["id"] = line[3:].strip()
        elif line.startswith("event:"):
            event["kind"] = line[6:].strip()
        elif line.startswith("data:"):
            event["data"] += line[5:].strip()


class OpsClient:
    def __init__(self, base_url: str, key: str | None, *, timeout_s: float = 30.0) -> None:
        if not key:
            raise OpsError("no API key: pass --key or set CDMO_API_KEY", code=2)
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {key}", "Accept": "application/json"},
            timeout=timeout_s,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> OpsClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- plumbing ---------------------------------------------------------------------------

    def _problem(self, response: httpx.Response, what: str) -> OpsError:
        detail = response.reason_phrase
        try:
            body = response.json()
            detail = body.get("detail") or body.get("title") or detail
            errors = body.get("errors")
            if errors:
                first = errors[0]
                detail = f"{first.get('field', '')}: {first.get('message', detail)}"
        except (ValueError, AttributeError):
            pass
        status = response.status_code
        if status == 401:
            return OpsError("the API key was refused (unknown, revoked or expired)", code=2)
        if status == 404:
            return OpsError(f"{what}: not found (or not visible to this key)", code=2)
        if 400 <= status < 500:
            return OpsError(f"{what}: {detail} (HTTP {status})", code=2)
        return OpsError(f"{what}: the server answered {status} {detail}", code=1)

    def request(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise OpsError(
                f"cannot reach {self.base_url}: {type(exc).__name__}: {exc}", code=1
            ) from exc
        if response.status_code >= 400:
            raise self._problem(response, what)
        return response.json()

    def all_pages(self, path: str, what: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 200}
            if cursor:
                params["cursor"] = cursor
            body = self.request("GET", path, what, params=params)
            items.extend(body["items"])
            cursor = body.get("next_cursor")
            if not cursor:
                return items

    # --- runs -------------------------------------------------------------------------------

    def submit(self, body: dict[str, Any], *, idempotency_key: str) -> dict[str, Any]:
        return dict(
            self.request(
                "POST",
                "/v1/match-runs",
                "submit",
                json=body,
                headers={"Idempotency-Key": idempotency_key},
            )
        )

    def list_runs(self, *, status: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        return list(self.request("GET", "/v1/match-runs", "runs", params=params)["items"])

    def get_run(self, run_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/v1/match-runs/{run_id}", f"run {run_id}"))

    def cancel(self, run_id: str) -> dict[str, Any]:
        return dict(self.request("POST", f"/v1/match-runs/{run_id}/cancel", f"run {run_id}"))

    def events(self, run_id: str, *, read_timeout_s: float = 60.0) -> Iterator[Event]:
        """The run's server-sent events until ``final``; resumes a dropped stream with
        Last-Event-ID (the server sends a keep-alive every 15 s, so a read that waits longer
        than ``read_timeout_s`` means the connection is gone)."""
        last: str | None = None
        drops = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if last:
                headers["Last-Event-ID"] = last
            try:
                with self.http.stream(
                    "GET",
                    f"/v1/match-runs/{run_id}/events",
                    headers=headers,
                    timeout=httpx.Timeout(30.0, read=read_timeout_s),
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise self._problem(response, f"run {run_id}")
                    for parsed in parse_sse(response.iter_lines()):
                        if parsed.id and parsed.id != "final":
                            last = parsed.id
                        yield parsed
                        if parsed.kind == "final":
                            return
            except httpx.HTTPError as exc:
                why = type(exc).__name__
            else:
                why = "closed before the final event"
            drops += 1  # resumed after the last event seen
            if drops > 5:
                raise OpsError(f"lost the event stream of run {run_id}: {why}", code=1)
            time.sleep(min(2.0 * drops, 10.0))

    def report_data(self, run_id: str) -> dict[str, Any]:
        """What the report draws (the dashboard's data for one run)."""
        run = self.get_run(run_id)
        data: dict[str, Any] = {"run": run, "events": [], "analytics_error": None}
        if run["status"] in FINAL_STATUSES:
            data["events"] = [e.data for e in self.events(run_id) if e.kind == "progress"]
        else:
            data["analytics_error"] = f"run {run_id} is {run['status']}: no answer yet"
            return data
        base = f"/v1/match-runs/{run_id}"
        try:
            data["utilisation"] = self.all_pages(f"{base}/utilisation", "utilisation")
            data["bottlenecks"] = self.request("GET", f"{base}/bottlenecks", "bottlenecks")
            placements = self.request("GET", f"{base}/placements-by-cdmo", "placements")
            data["placements"] = placements["items"]
        except OpsError as exc:
            if exc.code != 2:
                raise
            data["analytics_error"] = f"no analytics for this run: {exc}"
        return data
