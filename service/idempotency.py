"""Idempotent POSTs: a retried request with the same ``Idempotency-Key`` gets the first answer.

The key is scoped by organisation, method and path, and lives in the database table
``idempotency_records``, in the request's own transaction:

1. :func:`idempotency` (a dependency, after authentication) leaves a :class:`Pending` key
   on the transaction; the route's first use of ``tx.session`` (at the latest its
   ``respond``) *claims* it with one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE expired``.
   The row it inserts is invisible to others until commit, and a concurrent twin's INSERT
   waits on it: when the first request commits, the twin finds the finished record and
   replays it; when it rolls back, the twin claims the key and runs.
2. The route ends with :meth:`Transaction.respond`, which fills the claimed row with the
   response and commits it *together with the resource*. A crash at any point leaves either
   both or neither, so a retry yields exactly one resource and the first response.
3. A route that writes in one statement (:meth:`Transaction.commit_at_once`) claims the key
   with its response already filled in, in a CTE that the write depends on: the same
   INSERT, so the same waiting and the same all-or-nothing; when the key is taken, nothing
   is written and the route's usual path replays it (or answers 422).

Only successful answers are recorded: a request that failed created nothing, so its retry is
simply evaluated again. The same key with another body gets 422.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import Response
from sqlalchemy import ColumnElement, bindparam, delete, exists, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from service.deps import CurrentOrg, ServicesDep
from service.errors import IdempotencyKeyReusedError, InvalidFieldError
from service.models import IdempotencyRecord, utcnow
from service.transactions import Answer, Tx

HEADER = "Idempotency-Key"
REPLAY_HEADER = "Idempotent-Replayed"
_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
_REPLAYED_HEADERS = ("location", "etag")
PURGE_PROBABILITY = 0.01


class IdempotentReplay(Exception):  # noqa: N818 - a control-flow signal, not an error
    def __init__(self, record: IdempotencyRecord) -> None:
        super().__init__("replay")
        self.record = record


def record_key(org_id: str, method: str, path: str, key: str) -> str:
    return hashlib.sha256(f"{org_id}\n{method}\n{path}\n{key}".encode()).hexdigest()


@dataclass(frozen=True)
class Claim:
    """A key this request holds (uncommitted) in ``idempotency_records``."""

    key: str
    fingerprint: str

    def record(self, session: Session, answer: Answer) -> None:
        session.execute(
            update(IdempotencyRecord)
            .where(col(IdempotencyRecord.key) == self.key)
            .values(status=answer.status, headers=_replayed(answer), body=answer.content)
        )


def _replayed(answer: Answer) -> dict[str, str]:
    return {k: v for k, v in answer.headers.items() if k.lower() in _REPLAYED_HEADERS}


@dataclass(frozen=True)
class Pending:
    """A key this request will claim (see the module doc, 1 and 3)."""

    key: str
    fingerprint: str
    ttl_s: int

    def claim(self, session: Session) -> Claim:
        return claim(session, self.key, self.fingerprint, self.ttl_s)

    def claim_and_record(self, answer: Answer) -> tuple[ColumnElement[bool], dict[str, Any]] | None:
        if random.random() < PURGE_PROBABILITY:
            return None  # the usual path claims, and purges expired records
        values = _values(self.key, self.fingerprint, self.ttl_s)
        values.update(status=answer.status, headers=_replayed(answer), body=answer.content)
        return _CLAIMED, {f"claim_{k}": v for k, v in values.items()}


def purge_expired(session: Session, now: dt.datetime, limit: int = 1000) -> int:
    """Delete up to ``limit`` expired records (claims do this now and then, so the table
    stays about one TTL of records without a scheduled job)."""
    expired = (
        select(col(IdempotencyRecord.key))
        .where(col(IdempotencyRecord.expires_at) <= now)
        .limit(limit)
        .scalar_subquery()
    )
    result = session.execute(
        delete(IdempotencyRecord).where(col(IdempotencyRecord.key).in_(expired))
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _values(key: str, fingerprint: str, ttl_s: int) -> dict[str, Any]:
    now = utcnow()
    return {
        "key": key,
        "fingerprint": fingerprint,
        "status": 0,  # filled in by Claim.record before commit; 0 is never committed
        "headers": {},
        "body": "",
        "created_at": now,
        "expires_at": now + dt.timedelta(seconds=ttl_s),
    }


def _claim_statement(dialect: Any, values: dict[str, Any]) -> Any:
    """Insert the record, or take over an expired one; returns the key when claimed."""
    table = IdempotencyRecord.__table__  # type: ignore[attr-defined]
    stmt = dialect.insert(table).values(values)
    return stmt.on_conflict_do_update(
        index_elements=[table.c.key],
        set_={k: stmt.excluded[k] for k in values if k != "key"},
        where=table.c.expires_at <= values["created_at"],  # an expired record is reused
    ).returning(table.c.key)


def _claimed_in_a_cte() -> ColumnElement[bool]:
    """True where the claim, as a CTE of a one-statement write, claimed the key (built once;
    its values are the parameters ``claim_<column>``)."""
    table = IdempotencyRecord.__table__  # type: ignore[attr-defined]
    names = ("key", "fingerprint", "status", "headers", "body", "created_at", "expires_at")
    values = {n: bindparam(f"claim_{n}", type_=table.c[n].type) for n in names}
    claimed = _claim_statement(postgresql, values).cte("claimed")
    return exists(select(claimed.c.key))


_CLAIMED = _claimed_in_a_cte()


def claim(session: Session, key: str, fingerprint: str, ttl_s: int) -> Claim:
    """Claim ``key`` in this transaction, or raise :class:`IdempotentReplay` (the first
    request's answer) or 422 (the key was used with another body)."""
    values = _values(key, fingerprint, ttl_s)
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    if session.execute(_claim_statement(dialect, values)).first() is not None:
        if random.random() < PURGE_PROBABILITY:
            purge_expired(session, values["created_at"])
        return Claim(key, fingerprint)
    record = session.execute(
        select(IdempotencyRecord).where(col(IdempotencyRecord.key) == key)
    ).scalar_one()
    if record.fingerprint != fingerprint:
        raise IdempotencyKeyReusedError(
            "this Idempotency-Key was first used with a different request body"
        )
    raise IdempotentReplay(record)


async def idempotency(
    request: Request,
    principal: CurrentOrg,
    services: ServicesDep,
    tx: Tx,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias=HEADER,
            description="Makes a retried POST safe: the same key returns the first response "
            "and creates nothing new (kept 24 h, per organisation).",
            examples=["3f1c9a52-1b7e-4d0e-9a55-6a1f2e8b7c10"],
        ),
    ] = None,
) -> None:
    if idempotency_key is None:
        return
    tx.pending = pending(
        principal.org_id,
        request.method,
        request.url.path,
        idempotency_key,
        await request.body(),
        services.settings.idempotency.ttl_s,
    )


def pending(org_id: str, method: str, path: str, header: str, body: bytes, ttl_s: int) -> Pending:
    """The key a request with ``Idempotency-Key: <header>`` will claim (422 if malformed)."""
    if not _KEY_RE.match(header):
        raise InvalidFieldError(
            HEADER, "must be 1-255 printable ASCII characters", location="header"
        )
    fingerprint = hashlib.sha256(body).hexdigest()
    return Pending(record_key(org_id, method, path, header), fingerprint, ttl_s)


IdempotencyDep = Depends(idempotency)


async def _replay(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, IdempotentReplay)
    record = exc.record
    headers = {**record.headers, REPLAY_HEADER: "true"}
    return Response(
        content=record.body,
        status_code=record.status,
        headers=headers,
        media_type="application/json" if record.body else None,
    )


def install_idempotency(app: FastAPI) -> None:
    app.add_exception_handler(IdempotentReplay, _replay)
