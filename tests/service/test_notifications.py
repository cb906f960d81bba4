"""Notifications through HTTP: webhooks set by each organisation, events in its feed, signed
deliveries to a real HTTP receiver (a thread on 127.0.0.1), retried after a failure, every
attempt recorded. Runs on both backends: the Redis stream with PostgreSQL, the in-process
queue with the embedded default."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
from service_testkit import Api, assert_problem, ok
from sqlmodel import select

from service.models import WebhookDelivery
from service.notifications.signing import sign, verify


@dataclass
class Receiver:
    """A local webhook endpoint: answers ``fail_first`` requests with 500, then 200."""

    fail_first: int = 0
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/hook"

    def start(self) -> Receiver:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer.lock:
                    outer.received.append((dict(self.headers.items()), body))
                    failing = len(outer.received) <= outer.fail_first
                self.send_response(500 if failing else 200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(b) for _, b in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def fast_retries(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api.backend.settings.notifications, "backoff_base_s", 0.2)


def _wait(predicate: Any, seconds: float = 15.0) -> bool:
    """Poll ``predicate`` (bounded in time and count)."""
    for _ in range(int(seconds / 0.05)):
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def _market(api: Api):  # type: ignore[no-untyped-def]
    maker, cdmo = api.maker(), api.cdmo()
    site = api.site(cdmo)
    for month in ("2027-01", "2027-02", "2027-03"):
        api.listing(cdmo, site["id"], month=month, capacity_hours=500, reserved_hours=0)
    project = api.project(maker)
    return maker, cdmo, site, project


def test_signed_events_reach_the_webhook_and_are_retried_after_a_failure(
    api: Api, receiver: Receiver, fast_retries: None
) -> None:
    maker, cdmo, site, project = _market(api)
    receiver.fail_first = 1
    hook = ok(cdmo.put("/v1/orgs/me/webhook", json={"url": receiver.url}))
    secret = hook["secret"]
    assert secret.startswith("whsec_") and hook["url"] == receiver.url
    assert ok(cdmo.get("/v1/orgs/me/webhook")) == {
        "url": receiver.url,
        "secret": None,
        "signature_header": "CDMO-Signature",
    }

    proposal = api.propose(project["id"], site["id"])
    ok(cdmo.post(f"/v1/proposals/{proposal['id']}/accept"))
    # two events, the first of them twice (its first attempt got a 500)
    assert _wait(lambda: len(receiver.bodies()) >= 3)
    assert {b["type"] for b in receiver.bodies()} == {"proposal.proposed", "proposal.accepted"}

    with receiver.lock:
        received = list(receiver.received)
    for headers, body in received:
        assert verify(secret, body, headers["CDMO-Signature"])
        assert not verify("whsec_wrong", body, headers["CDMO-Signature"])
        assert headers["CDMO-Event-Id"] == json.loads(body)["id"]
    first = json.loads(received[0][1])
    assert [json.loads(b)["id"] for _, b in received].count(first["id"]) == 2
    assert first["type"] == "proposal.proposed"
    assert first["data"]["proposal_id"] == proposal["id"]

    def delivered() -> list[dict[str, Any]]:
        items = ok(cdmo.get("/v1/orgs/me/events"))["items"]
        return [e for e in items if e["delivery"]["status"] == "delivered"]

    assert _wait(lambda: len(delivered()) == 2)
    if api.backend.name == "services":  # the events went through the Redis stream
        settings = api.backend.settings
        client = redis.Redis.from_url(settings.redis_url or "")
        try:
            entries = client.xrange(settings.redis.key_prefix + "events")
        finally:
            client.close()
        streamed = {fields[b"event_id"].decode() for _, fields in entries}
        assert {e["id"] for e in delivered()} <= streamed
    events = ok(cdmo.get("/v1/orgs/me/events"))["items"]
    assert [e["type"] for e in events] == ["proposal.proposed", "proposal.accepted"]
    proposed = events[0]["delivery"]
    assert proposed["attempts"] == 2 and proposed["last_status_code"] == 200
    assert events[1]["data"]["previous_status"] == "proposed"
    assert events[1]["data"]["actor"] == "cdmo"
    with api.backend.db.session() as session:
        attempts = session.exec(
            select(WebhookDelivery)
            .where(WebhookDelivery.event_id == events[0]["id"])
            .order_by(WebhookDelivery.attempt)  # type: ignore[arg-type]
        ).all()
    assert [(a.attempt, a.status_code) for a in attempts] == [(1, 500), (2, 200)]
    assert attempts[0].error == "HTTP 500"

    # the maker has no webhook: its events are listed, not delivered; paged
    ok(maker.post(f"/v1/proposals/{proposal['id']}/confirm"))
    page = ok(maker.get("/v1/orgs/me/events?limit=2"))
    assert [e["type"] for e in page["items"]] == ["proposal.proposed", "proposal.accepted"]
    assert all(e["delivery"]["status"] == "no_webhook" for e in page["items"])
    rest = ok(maker.get(f"/v1/orgs/me/events?limit=2&cursor={page['next_cursor']}"))
    assert [e["type"] for e in rest["items"]] == ["proposal.confirmed"]
    assert rest["next_cursor"] is None
    only = ok(maker.get("/v1/orgs/me/events?type=proposal.confirmed"))["items"]
    assert len(only) == 1
    # other organisations see none of it
    assert ok(api.cdmo().get("/v1/orgs/me/events"))["items"] == []
    assert _wait(lambda: "proposal.confirmed" in {b["type"] for b in receiver.bodies()})


def test_failed_deliveries_give_up_after_the_last_attempt(
    api: Api, receiver: Receiver, fast_retries: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api.backend.settings.notifications, "max_attempts", 3)
    _maker, cdmo, site, project = _market(api)
    receiver.fail_first = 100
    ok(cdmo.put("/v1/orgs/me/webhook", json={"url": receiver.url}))
    api.propose(project["id"], site["id"])

    def state() -> dict[str, Any]:
        return ok(cdmo.get("/v1/orgs/me/events"))["items"][0]["delivery"]

    assert _wait(lambda: state()["status"] == "failed")
    assert state()["attempts"] == 3 and state()["last_error"] == "HTTP 500"
    assert len(receiver.received) == 3


def test_webhook_input_and_removal(api: Api, receiver: Receiver) -> None:
    _maker, cdmo, site, project = _market(api)
    problem = assert_problem(
        cdmo.put("/v1/orgs/me/webhook", json={"url": "ftp://x.example/h"}),
        422,
        "validation-error",
    )
    assert problem["errors"][0]["field"] == "url"
    first = ok(cdmo.put("/v1/orgs/me/webhook", json={"url": receiver.url}))["secret"]
    second = ok(cdmo.put("/v1/orgs/me/webhook", json={"url": receiver.url}))["secret"]
    assert first != second  # each set makes a new secret
    assert cdmo.delete("/v1/orgs/me/webhook").status_code == 204
    api.propose(project["id"], site["id"])
    events = ok(cdmo.get("/v1/orgs/me/events"))["items"]
    assert [e["delivery"]["status"] for e in events] == ["no_webhook"]
    assert_problem(cdmo.get("/v1/orgs/me/events?limit=0"), 422, "validation-error")


def test_signature_helpers_refuse_stale_and_tampered_messages() -> None:
    body = b'{"id":"evt_1"}'
    header = sign("whsec_k", body, timestamp=1_000_000)
    assert header.startswith("t=1000000,v1=")
    assert verify("whsec_k", body, header, now=1_000_100)
    assert not verify("whsec_k", body, header, now=1_000_000 + 301)  # too old
    assert not verify("whsec_k", body + b" ", header, now=1_000_100)
    assert not verify("whsec_k", body, "garbage", now=1_000_100)


def test_a_committed_run_notifies_its_operator_and_the_parties_of_new_proposals(
    api: Api,
) -> None:
    from service.flows.match_run import RunContext, execute
    from service.jobs.events import make_event_channel

    maker, cdmo, site, _ = _market(api)
    project = api.project(maker, target_markets=["CN"])
    # the declined site is the better one: only the decline keeps the run away from it
    declined_site = api.site(
        cdmo,
        name="Declined plant",
        quality={"inspection_findings": 0, "on_time_rate": 1.0, "lead_time_weeks": 0},
    )
    for month in ("2027-01", "2027-02", "2027-03"):
        api.listing(cdmo, declined_site["id"], month=month, capacity_hours=500, reserved_hours=0)
    first = api.propose(project["id"], declined_site["id"])
    ok(cdmo.post(f"/v1/proposals/{first['id']}/decline"))
    body = {"params": {"time_limit_s": 2, "deterministic": True}}
    run = ok(api.operator.post("/v1/match-runs", json=body), 202)
    settings = api.backend.settings
    events = make_event_channel(settings.redis_url, db=api.backend.db, prefix="cdmo-test:deals:")
    try:  # the job, here (no worker consumes this backend's queue)
        execute(RunContext(api.backend.db, events, settings.runs), run["id"])
    finally:
        events.close()

    def finished() -> list[dict[str, Any]]:
        feed = ok(api.operator.get("/v1/orgs/me/events?type=run.finished"))["items"]
        return [e for e in feed if e["data"]["run_id"] == run["id"]]

    assert _wait(lambda: len(finished()) == 1)
    done = finished()[0]["data"]
    assert done["status"] == "succeeded" and done["proposed"] == 1
    # the run proposed the project again, never to the declined site
    made = [
        e["data"]
        for e in ok(maker.get("/v1/orgs/me/events?type=proposal.proposed"))["items"]
        if e["data"]["batch_id"] == run["id"]
    ]
    assert [(d["project_id"], d["site_id"]) for d in made] == [(project["id"], site["id"])]
    cdmo_feed = ok(cdmo.get("/v1/orgs/me/events?type=proposal.proposed"))["items"]
    assert made[0]["proposal_id"] in {e["data"]["proposal_id"] for e in cdmo_feed}


def test_superseding_a_proposal_tells_both_parties(api: Api) -> None:
    maker, cdmo, site, project = _market(api)
    first = api.propose(project["id"], site["id"])
    api.propose(project["id"], api.site(cdmo, name="Second plant")["id"])
    for party in (maker, cdmo):
        feed = ok(party.get("/v1/orgs/me/events?type=proposal.superseded"))["items"]
        assert [e["data"]["proposal_id"] for e in feed] == [first["id"]]
        assert feed[0]["data"]["previous_status"] == "proposed"


def test_run_finished_is_written_in_the_transaction_of_the_final_state(api: Api) -> None:
    from schemas.api import RunStatus
    from service import repositories as repo
    from service.models import MatchRun, OrgEvent

    if api.backend.name != "services":
        pytest.skip("embedded, the local pool would race this test for its runs")
    _market(api)
    db = api.backend.db

    def run_events(run_id: str) -> list[OrgEvent]:
        with db.session(write=False) as session:
            rows = session.exec(select(OrgEvent).where(OrgEvent.kind == "run.finished")).all()
        return [r for r in rows if r.data["run_id"] == run_id]

    def status(run_id: str) -> str:
        with db.session(write=False) as session:
            run = session.get(MatchRun, run_id)
            assert run is not None
            return run.status

    body = {"params": {"time_limit_s": 2, "deterministic": True}}
    run = ok(api.operator.post("/v1/match-runs", json=body), 202)
    with db.session() as session:
        claimed = repo.runs.claim(session=session, run_id=run["id"], token="t1")
        session.commit()
    assert claimed is not None
    # a crash before the commit: neither the final state nor the event
    with db.session() as session:
        repo.runs.finish(
            session=session, run_id=run["id"], token="t1", status=RunStatus.FAILED, error="boom"
        )
        session.rollback()
    assert status(run["id"]) == "running" and run_events(run["id"]) == []
    # the commit: both at once
    with db.session() as session:
        repo.runs.finish(
            session=session, run_id=run["id"], token="t1", status=RunStatus.FAILED, error="boom"
        )
        session.commit()
    assert status(run["id"]) == "failed"
    [event] = run_events(run["id"])
    assert event.data["status"] == "failed" and event.data["error"] == "boom"

    # a run cancelled before it started is finished too, and says so
    queued = ok(api.operator.post("/v1/match-runs", json=body), 202)
    ok(api.operator.post(f"/v1/match-runs/{queued['id']}/cancel"), 202)
    [cancelled] = run_events(queued["id"])
    assert cancelled.data["status"] == "cancelled"
