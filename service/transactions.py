"""The request's one database transaction, opened and ended at the edge.

Repository functions never commit: they add to the session and flush (so constraint errors
surface where they happen). A write route ends the transaction itself, exactly once, with
:meth:`Transaction.respond` (or :meth:`Transaction.commit` when it answers otherwise), so
everything one request does - several repository calls, and the idempotency record of a POST -
commits as one. Anything not committed when the request ends is rolled back when the session
closes (an exception, a replay, a client error).

    @router.post("", status_code=201, response_model=ThingPublic, dependencies=[IdempotencyDep])
    def create_thing(thing_in: ThingCreate, tx: Tx, principal: CurrentOrg) -> Response:
        thing = repo.things.create_thing(session=tx.session, ...)
        other = repo.others.touch(session=tx.session, ...)        # same transaction
        return tx.respond(to_public(thing), status_code=201, headers={"Location": ...})

A hot write may first try :meth:`Transaction.commit_at_once`: the whole transaction as one
statement (data-modifying CTEs, autocommitted: one round trip on PostgreSQL), falling back to
the path above only when that statement changed nothing (README "Under load", "Hot path").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import ColumnElement, Row, Select, true
from sqlmodel import Session

from service.deps import SessionDep


@dataclass(frozen=True)
class Answer:
    """A write's response, serialised once: sent, and recorded for its Idempotency-Key."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    content: str = ""  # JSON text; "" for no body

    @classmethod
    def of(
        cls, body: BaseModel | None, status_code: int = 200, headers: dict[str, str] | None = None
    ) -> Answer:
        content = body.model_dump_json(by_alias=True) if body is not None else ""
        return cls(status_code, headers or {}, content)

    def response(self) -> Response:
        media_type = "application/json" if self.content else None
        return Response(
            self.content, status_code=self.status, headers=self.headers, media_type=media_type
        )


class ResponseRecorder(Protocol):
    """What claiming an Idempotency-Key leaves on the transaction (see service.idempotency)."""

    def record(self, session: Session, answer: Answer) -> None: ...


class PendingClaim(Protocol):
    """An Idempotency-Key not yet claimed (see service.idempotency)."""

    def claim(self, session: Session) -> ResponseRecorder: ...

    def claim_and_record(self, answer: Answer) -> tuple[ColumnElement[bool], dict[str, Any]] | None:
        """A condition true where a CTE claimed the key with ``answer`` already recorded, and
        the parameters of that CTE (None: not in one statement this time)."""


class Transaction:
    def __init__(self, session: Session) -> None:
        self._session = session
        self.pending: PendingClaim | None = None  # set by the idempotency dependency
        self.claim: ResponseRecorder | None = None
        self.at_once = True  # False: commit_at_once is not tried (AT_ONCE_TRIED_STATE)

    @property
    def session(self) -> Session:
        """The request's session; a pending Idempotency-Key is claimed in it on first use (a
        concurrent twin then waits for this transaction's end, see service.idempotency)."""
        self._claim_pending()
        return self._session

    def _claim_pending(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            self.claim = pending.claim(self._session)

    def commit(self) -> None:
        self._claim_pending()
        self._session.commit()

    def respond(
        self,
        body: BaseModel | None,
        *,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """Serialise the answer, record it for the Idempotency-Key in this same transaction
        (when the request claimed one), commit, and return it."""
        return self.commit_answer(Answer.of(body, status_code, headers))

    def commit_answer(self, answer: Answer) -> Response:
        self._claim_pending()
        if self.claim is not None:
            self.claim.record(self._session, answer)
        self._session.commit()
        return answer.response()

    def commit_at_once(
        self,
        build: Callable[[ColumnElement[bool]], Select[Any]],
        params: dict[str, Any],
        answer: Answer | None = None,
    ) -> Row[Any] | None:
        """The whole transaction as one autocommitted statement, when possible: PostgreSQL,
        nothing sent on the session yet, and a pending Idempotency-Key only with ``answer``
        (it is claimed with the answer recorded, in a CTE of the same statement).

        ``build(gate)`` returns the statement: data-modifying CTEs that write only where
        ``gate`` holds (the key was claimed), selected by one SELECT, its values bound from
        ``params`` (so that it is built and compiled once per shape: building and hashing a
        statement cost more CPU than the rest of the request). Returns its first row;
        None when the statement was not sent or changed nothing (gate false, a condition not
        met): the session is then untouched, and the route takes its usual path, which
        answers the error (404, 409, 412, a replay, ...) or writes after all."""
        session = self._session
        if (
            not self.at_once
            or session.get_bind().dialect.name != "postgresql"
            or session.in_transaction()
        ):
            return None
        gate: ColumnElement[bool] = true()
        if self.pending is not None:
            claimed = self.pending.claim_and_record(answer) if answer is not None else None
            if claimed is None:
                return None
            gate, claim_params = claimed
            params = {**params, **claim_params}
        connection = session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        row = connection.execute(build(gate), params).first()
        if row is None:
            session.rollback()  # hands the connection back; the usual path begins afresh
            return None
        self.pending = None  # claimed and recorded by the statement
        session.commit()  # sends nothing (autocommit); the session is left with no connection
        return row


AT_ONCE_TRIED_STATE = "at_once_tried"
"""Set by the lean path (service.hotpath) on a request whose one statement it sent and that
wrote nothing: the usual path does not send it again, it answers what failed."""


async def get_transaction(session: SessionDep, request: Request) -> Transaction:
    tx = Transaction(session)
    tx.at_once = not getattr(request.state, AT_ONCE_TRIED_STATE, False)
    return tx


Tx = Annotated[Transaction, Depends(get_transaction)]
