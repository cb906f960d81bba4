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
"""

from __future__ import annotations

from typing import Annotated, Protocol

from fastapi import Depends
from fastapi.responses import Response
from pydantic import BaseModel
from sqlmodel import Session

from service.deps import SessionDep


class ResponseRecorder(Protocol):
    """What the idempotency dependency leaves on the transaction (see service.idempotency)."""

    def record(self, session: Session, status: int, headers: dict[str, str], body: str) -> None: ...


class Transaction:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.claim: ResponseRecorder | None = None  # set by the idempotency dependency

    def commit(self) -> None:
        self.session.commit()

    def respond(
        self,
        body: BaseModel | None,
        *,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """Serialise the answer, record it for the Idempotency-Key in this same transaction
        (when the request claimed one), commit, and return it."""
        content = body.model_dump_json(by_alias=True) if body is not None else ""
        media_type = "application/json" if body is not None else None
        if self.claim is not None:
            self.claim.record(self.session, status_code, headers or {}, content)
        self.session.commit()
        return Response(content, status_code=status_code, headers=headers, media_type=media_type)


async def get_transaction(session: SessionDep) -> Transaction:
    return Transaction(session)


Tx = Annotated[Transaction, Depends(get_transaction)]
