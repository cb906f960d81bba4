"""Database round trips per request on the hot endpoints (issue 9), counted on PostgreSQL
with SQLAlchemy's engine events: every statement sent, plus ``BEGIN`` and ``COMMIT`` /
``ROLLBACK`` when the connection is in a transaction (reads run in autocommit: psycopg sends
neither). The API key is served from the authenticator's cache (warmed by a first request).

Every hot endpoint is one round trip: reads one SELECT in autocommit (on the event loop's
engine, service.db.LoopReads), writes one
autocommitted statement (data-modifying CTEs: the write, the market version bump and the
Idempotency-Key record, see README "Under load"). These figures are the ceiling, so any
regression fails here; the usual multi-statement path is taken only when a check fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from service_testkit import Api, ok, project_body
from sqlalchemy import event, text

from service import idempotency

# endpoint -> the most round trips it may take
CEILING = {
    "GET /v1/projects/{id}": 1,
    "GET /v1/projects": 1,
    "POST /v1/projects": 1,  # WITH inserted AS (INSERT ...), market_bumped AS (UPDATE ...)
    "POST /v1/projects (Idempotency-Key)": 1,  # + claimed AS (INSERT ... ON CONFLICT ...)
    "PATCH /v1/listings/{id}": 1,  # WITH written AS (UPDATE ... RETURNING), market_bumped ...
}


class RoundTrips:
    def __init__(self, *engines: Any, raw: Any = None) -> None:
        self.engines = engines
        self.raw = raw  # the lean path's raw connections (service.db.RawReads)
        self.sent: list[str] = []

    def on_raw(self, statement: str) -> None:
        self.sent.append(statement.split(None, 1)[0].upper())

    def _transactional(self, conn: Any) -> bool:
        return conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT"

    def on_statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.sent.append(statement.split(None, 1)[0].upper())

    def on_begin(self, conn: Any) -> None:
        if self._transactional(conn):
            self.sent.append("BEGIN")

    def on_commit(self, conn: Any) -> None:
        if self._transactional(conn):
            self.sent.append("COMMIT")

    def on_rollback(self, conn: Any) -> None:
        if self._transactional(conn):
            self.sent.append("ROLLBACK")

    def _events(self) -> list[tuple[Any, str, Any]]:
        return [
            (engine, name, fn)
            for engine in self.engines
            for name, fn in (
                ("before_cursor_execute", self.on_statement),
                ("begin", self.on_begin),
                ("commit", self.on_commit),
                ("rollback", self.on_rollback),
            )
        ]

    def __enter__(self) -> RoundTrips:
        for engine, name, fn in self._events():
            event.listen(engine, name, fn)
        if self.raw is not None:
            self.raw.listeners.append(self.on_raw)
        return self

    def __exit__(self, *exc: object) -> None:
        for engine, name, fn in self._events():
            event.remove(engine, name, fn)
        if self.raw is not None:
            self.raw.listeners.remove(self.on_raw)

    def count(self, call: Callable[[], httpx.Response], status: int) -> list[str]:
        self.sent.clear()
        response = call()
        assert response.status_code == status, response.text
        return list(self.sent)


@pytest.fixture
def trips(api: Api, monkeypatch: pytest.MonkeyPatch) -> Iterator[RoundTrips]:
    if api.backend.name != "services":
        pytest.skip("round trips are counted on PostgreSQL (the services backend)")
    # keys stay cached for the whole test, however slow a loaded machine makes it
    monkeypatch.setattr(api.backend.services.auth, "ttl_s", 3600.0)
    # the 1 % of keyed POSTs that take the usual path to purge expired records
    monkeypatch.setattr(idempotency, "PURGE_PROBABILITY", 0.0)
    ok(api.maker().get("/v1/projects"))  # the event loop's engine of reads exists from now
    db = api.backend.db
    with RoundTrips(db.engine, *db.reads.engines(), raw=db.raw) as counter:
        yield counter


def test_round_trips_per_endpoint_stay_within_their_ceiling(api: Api, trips: RoundTrips) -> None:
    maker, cdmo = api.maker(), api.cdmo()
    site = api.site(cdmo)
    listing = api.listing(cdmo, site["id"], month="2027-01", capacity_hours=500, reserved_hours=0)
    project = api.project(maker)
    ok(maker.get("/v1/projects"))  # both keys now in the authenticator's cache
    ok(cdmo.get(f"/v1/listings/{listing['id']}"))

    seen = {
        "GET /v1/projects/{id}": trips.count(
            lambda: maker.get(f"/v1/projects/{project['id']}"), 200
        ),
        "GET /v1/projects": trips.count(lambda: maker.get("/v1/projects"), 200),
        "POST /v1/projects": trips.count(
            lambda: maker.post("/v1/projects", json=project_body()), 201
        ),
        "POST /v1/projects (Idempotency-Key)": trips.count(
            lambda: maker.post(
                "/v1/projects", json=project_body(), headers={"Idempotency-Key": "rt-1"}
            ),
            201,
        ),
        "PATCH /v1/listings/{id}": trips.count(
            lambda: cdmo.patch(
                f"/v1/listings/{listing['id']}",
                json={"capacity_hours": 400},
                headers={"If-Match": f'"{listing["version"]}"'},
            ),
            200,
        ),
    }
    over = {k: v for k, v in seen.items() if len(v) > CEILING[k]}
    assert not over, over
    # the reads are one statement each, in autocommit; so are the writes
    assert seen["GET /v1/projects/{id}"] == ["SELECT"]
    assert seen["GET /v1/projects"] == ["SELECT"]
    assert seen["POST /v1/projects"] == ["WITH"]
    assert seen["POST /v1/projects (Idempotency-Key)"] == ["WITH"]
    assert seen["PATCH /v1/listings/{id}"] == ["WITH"]
    assert ok(cdmo.get(f"/v1/listings/{listing['id']}"))["capacity_hours"] == 400


def test_a_failed_check_costs_round_trips_only_when_it_fails(api: Api, trips: RoundTrips) -> None:
    """The one statement writes nothing when a check fails; the usual path then answers the
    error (and a replay), in its own transaction."""
    maker, cdmo = api.maker(), api.cdmo()
    site = api.site(cdmo)
    listing = api.listing(cdmo, site["id"], month="2027-01", capacity_hours=500, reserved_hours=0)
    ok(maker.get("/v1/projects"))
    ok(cdmo.get(f"/v1/listings/{listing['id']}"))
    stale = trips.count(
        lambda: cdmo.patch(
            f"/v1/listings/{listing['id']}",
            json={"capacity_hours": 400},
            headers={"If-Match": f'"{listing["version"] + 1}"'},
        ),
        412,
    )
    assert stale == ["WITH", "BEGIN", "SELECT", "ROLLBACK"]
    body = project_body()
    first = trips.count(
        lambda: maker.post("/v1/projects", json=body, headers={"Idempotency-Key": "rt-2"}), 201
    )
    assert first == ["WITH"]
    replayed = trips.count(
        lambda: maker.post("/v1/projects", json=body, headers={"Idempotency-Key": "rt-2"}), 201
    )
    # the statement finds the key taken; the usual path's claim finds the record and replays
    assert replayed[0] == "WITH" and replayed[-1] == "ROLLBACK", replayed


def test_the_checks_of_the_one_statement_writes_decide_as_the_usual_path_does(
    api: Api, trips: RoundTrips
) -> None:
    """Each check the one statement makes in SQL (an operator's maker, excluded CDMOs, the
    caller's listing, held hours) is shown passing (one statement, written) and failing
    (nothing written by it; the usual path answers the same error it always did)."""
    maker, cdmo, other = api.maker(), api.cdmo(), api.cdmo()
    operator = api.operator
    site = api.site(cdmo)
    listing = api.listing(cdmo, site["id"], month="2027-01", capacity_hours=500, reserved_hours=0)
    for tenant in (maker, cdmo, other, operator):
        ok(tenant.get("/v1/orgs/me/webhook"))  # every key cached

    def post(who: Any, body: dict[str, Any], status: int) -> list[str]:
        return trips.count(lambda: who.post("/v1/projects", json=body), status)

    assert post(operator, project_body(maker_id=maker.id), 201) == ["WITH"]
    assert post(operator, project_body(maker_id=cdmo.id), 422)[0] == "WITH"  # not a maker
    assert post(maker, project_body(excluded_cdmo_ids=[cdmo.id]), 201) == ["WITH"]
    refused = post(maker, project_body(excluded_cdmo_ids=[cdmo.id, maker.id]), 422)
    assert refused[0] == "WITH" and "ROLLBACK" in refused

    def patch(who: Any, body: dict[str, Any], status: int) -> list[str]:
        current = ok(cdmo.get(f"/v1/listings/{listing['id']}"))
        return trips.count(
            lambda: who.patch(
                f"/v1/listings/{listing['id']}",
                json=body,
                headers={"If-Match": f'"{current["version"]}"'},
            ),
            status,
        )

    assert patch(operator, {"capacity_hours": 450}, 200) == ["WITH"]
    assert patch(other, {"capacity_hours": 450}, 404)[0] == "WITH"  # not its listing
    assert patch(cdmo, {"reserved_hours": 600}, 409)[0] == "WITH"  # over capacity
    assert patch(cdmo, {"reserved_hours": 100}, 200) == ["WITH"]
    with api.backend.db.session() as session:  # deals hold 80 of the 100 reserved hours
        session.execute(
            text("UPDATE listings SET held_hours = 80 WHERE id = :id"), {"id": listing["id"]}
        )
        session.commit()
    assert patch(cdmo, {"reserved_hours": 50}, 409)[0] == "WITH"  # below what deals hold
    assert patch(cdmo, {"capacity_hours": 90, "reserved_hours": 90}, 200) == ["WITH"]
    final = ok(cdmo.get(f"/v1/listings/{listing['id']}"))
    assert (final["capacity_hours"], final["reserved_hours"]) == (90, 90)
