"""Events to organisations, written in the transaction of the change they report.

:func:`record` adds the rows; when that session commits, the new ids are handed to the wake
callback of this process (:func:`add_wake`, by each deliverer), which never blocks.
Without a deliverer in the process the rows wait for the next poll of one elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import event
from sqlmodel import Session, col, select

from schemas.api import DeliveryStatus, EventDelivery, EventPublic
from service.ids import new_id
from service.models import Organisation, OrgEvent, utcnow
from service.pagination import PageParams, paginate

_PENDING_KEY = "cdmo_outbox_ids"
_wakes: list[Callable[[list[str]], None]] = []  # one per deliverer in this process


class EventKind:
    PROPOSAL_PROPOSED = "proposal.proposed"
    PROPOSAL_ACCEPTED = "proposal.accepted"
    PROPOSAL_DECLINED = "proposal.declined"
    PROPOSAL_CONFIRMED = "proposal.confirmed"
    PROPOSAL_WITHDRAWN = "proposal.withdrawn"
    PROPOSAL_EXPIRED = "proposal.expired"
    PROPOSAL_SUPERSEDED = "proposal.superseded"
    RUN_FINISHED = "run.finished"


def add_wake(callback: Callable[[list[str]], None]) -> None:
    """Register a deliverer's wake callback (it must not block)."""
    _wakes.append(callback)


def remove_wake(callback: Callable[[list[str]], None]) -> None:
    if callback in _wakes:
        _wakes.remove(callback)


def record(
    session: Session,
    *,
    org_ids: Iterable[str],
    kind: str,
    data: Mapping[str, Any],
) -> list[str]:
    """One event per organisation (each once); ``pending`` where it has a webhook now."""
    return record_many(session, [(org_ids, kind, data)])


def record_many(
    session: Session, items: Sequence[tuple[Iterable[str], str, Mapping[str, Any]]]
) -> list[str]:
    """:func:`record` for many changes at once (an optimiser batch): one lookup of the
    organisations' webhooks, one bulk insert. Returns the ids of the events to deliver."""
    items = [(sorted(set(orgs)), kind, data) for orgs, kind, data in items]
    wanted = sorted({org for orgs, _, _ in items for org in orgs})
    if not wanted:
        return []
    hooks: dict[str, str | None] = {}
    for i in range(0, len(wanted), 5000):
        chunk = wanted[i : i + 5000]
        hooks.update(
            session.exec(
                select(Organisation.id, Organisation.webhook_url).where(
                    col(Organisation.id).in_(chunk)
                )
            ).all()
        )
    now = utcnow()
    rows: list[dict[str, Any]] = []
    to_deliver: list[str] = []
    for orgs, kind, data in items:
        for org_id in orgs:
            if org_id not in hooks:
                continue
            has_hook = hooks[org_id] is not None
            event_id = new_id("evt")
            rows.append(
                {
                    "id": event_id,
                    "org_id": org_id,
                    "kind": kind,
                    "data": dict(data),
                    "status": (
                        DeliveryStatus.PENDING if has_hook else DeliveryStatus.NO_WEBHOOK
                    ).value,
                    "attempts": 0,
                    "next_attempt_at": now if has_hook else None,
                    "created_at": now,
                }
            )
            if has_hook:
                to_deliver.append(event_id)
    from service.repositories.bulk import copy_rows  # here: repositories import this module

    copy_rows(session, OrgEvent, rows)  # COPY on PostgreSQL: a batch is ~2 events per proposal
    session.info.setdefault(_PENDING_KEY, []).extend(to_deliver)
    return to_deliver


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    ids = session.info.pop(_PENDING_KEY, None)
    if ids:
        for wake in list(_wakes):
            wake(list(ids))


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


def to_public(row: OrgEvent) -> EventPublic:
    return EventPublic(
        id=row.id,
        type=row.kind,
        created_at=row.created_at,
        data=row.data,
        delivery=EventDelivery(
            status=DeliveryStatus(row.status),
            attempts=row.attempts,
            last_status_code=row.last_status_code,
            last_error=row.last_error,
            delivered_at=row.delivered_at,
        ),
    )


def list_events(
    *, session: Session, org_id: str, page: PageParams, kind: str | None = None
) -> tuple[list[EventPublic], str | None]:
    stmt = select(OrgEvent).where(OrgEvent.org_id == org_id)
    if kind is not None:
        stmt = stmt.where(OrgEvent.kind == kind)
    rows, cursor = paginate(session, stmt, OrgEvent.id, page)
    return [to_public(r[0]) for r in rows], cursor
