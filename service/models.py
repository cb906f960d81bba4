"""Database tables, and nothing else: wire models live in :mod:`schemas.api`.

Enum-valued columns are plain strings (validated at the API), so adding an enum member
needs no migration. Nested value objects (certifications, loads) are JSON documents: they are
always read and written with their parent and never queried on their own.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    LargeBinary,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
SQLModel.metadata.naming_convention = NAMING_CONVENTION

JSONType = JSON().with_variant(JSONB(), "postgresql")
# None stored as SQL NULL (not JSON null), for columns whose absence is tested in SQL.
NullableJSON = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
Timestamp = DateTime(timezone=True)

MARKET_STATE_STRIPES = 32
"""Rows of ``market_state`` (ids 1..32): a write bumps one at random, the version is their sum."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Organisation(SQLModel, table=True):
    __tablename__ = "organisations"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200, unique=True)
    kind: str = Field(max_length=16, index=True)
    country: str | None = Field(default=None, max_length=2)
    webhook_url: str | None = Field(default=None, max_length=2000)
    webhook_secret: str | None = Field(default=None, max_length=100)
    created_at: dt.datetime = Field(default_factory=utcnow, sa_type=Timestamp)


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(
        foreign_key="organisations.id", ondelete="CASCADE", max_length=64, index=True
    )
    label: str = Field(default="", max_length=100)
    prefix: str = Field(max_length=16)
    key_hash: str = Field(max_length=64, unique=True)
    created_at: dt.datetime = Field(default_factory=utcnow, sa_type=Timestamp)
    revoked_at: dt.datetime | None = Field(default=None, sa_type=Timestamp)


class Site(SQLModel, table=True):
    __tablename__ = "sites"

    id: str = Field(primary_key=True, max_length=64)
    cdmo_id: str = Field(
        foreign_key="organisations.id", ondelete="CASCADE", max_length=64, index=True
    )
    name: str = Field(max_length=200)
    country: str = Field(max_length=2)
    region: str = Field(max_length=8, index=True)
    overseas: bool = False
    certifications: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSONType)
    processes: list[str] = Field(default_factory=list, sa_type=JSONType)
    categories: list[str] = Field(default_factory=list, sa_type=JSONType)
    device_classes: list[str] = Field(default_factory=list, sa_type=JSONType)
    quality: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    version: int = 1
    created_at: dt.datetime = Field(default_factory=utcnow, sa_type=Timestamp)
    updated_at: dt.datetime = Field(default_factory=utcnow, sa_type=Timestamp)


class Listing(SQLModel, table=True):
    __tablename__ = "listings"
    __table_args__ = (
        UniqueConstraint("site_id", "process", "month"),
        CheckConstraint("capacity_hours >= 0", name="capacity_nonnegative"),
        CheckConstraint(
            "reserved_hours >= 0 AND reserved_hours <= capacity_hours", name="reserved_in_range"
        ),
        CheckConstraint("price_per_hour >= 0", name="price_nonnegative"),
        CheckConstraint(
            "held_hours >= 0 AND held_hours <= reserved_hours", name="held_in_reserved"
        ),
    )

    id: str = Field(primary_key=True, max_length=64)
    site_id: str = Field(foreign_key="sites.id", ondelete="CASCADE", max_length=64)
    process: str = Field(max_length=32)
    month: str = Field(max_length=7, index=True)
    capacity_hours: float
    reserved_hours: float = 0.0
    # The part of reserved_hours held by accepted/confirmed proposals (service.flows.deals).
    held_hours: float = 0.0
    price_per_hour: float
    version: int = 1
    created_at: dt.datetime = Field(default_factory=utcnow, sa_type=Timestamp)
    updated_at: dt.datetime = Field(default_factory=utcnow, sa_type=Timestamp)


class Project(SQLModel, table=True):
    __tablename__ = "projects"
    __table_args__ = (
        CheckConstraint("priority BETWEEN 1 AND 10", name="priority_range"),
        CheckConstraint("window_end >= window_start", name="window_ordered"),
    )

    id: str = Field(primary_key=True, max_length=64)
    maker_id: str = Field(
        foreign_key="organisations.id", ondelete="CASCADE", max_length=64, index=True
    )
    title: str = Field(max_length=200)
    category: str = Field(max_length=32, index=True)
    device_class: str = Field(max_length=4)
    target_markets: list[str] = Field(default_factory=list, sa_type=JSONType)
    required_certifications: list[str] = Field(default_factory=list, sa_type=JSONType)
    window_start: str = Field(max_length=7)
    window_end: str = Field(max_length=7)
    loads: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSONType)
    stage: str = Field(max_length=16)
    priority: int = 5
    budget_ceiling: float | None = None
    excluded_cdmo_ids: list[str] = Field(default_factory=list, sa_type=JSONType)
    second_source_required: bool = False
    second_source_share: float = 0.3
    # "region" (a different CDMO in another region) or "cdmo": schemas.market.SecondSourceSeparation
    second_source_separation: str = Field(default="region", max_length=8)
    confidential: bool = True
    status: str = Field(max_length=16, index=True)
    version: int = 1
    created_at: dt.datetime = Field(default_factory=utcnow, sa_type=Timestamp)
    updated_at: dt.datetime = Field(default_factory=utcnow, sa_type=Timestamp)


class Proposal(SQLModel, table=True):
    __tablename__ = "proposals"

    id: str = Field(primary_key=True, max_length=64)
    project_id: str = Field(
        foreign_key="projects.id", ondelete="CASCADE", max_length=64, index=True
    )
    site_id: str = Field(foreign_key="sites.id", ondelete="CASCADE", max_length=64, index=True)
    cdmo_id: str = Field(
        foreign_key="organisations.id", ondelete="CASCADE", max_length=64, index=True
    )
    role: str = Field(max_length=16)
    status: str = Field(max_length=16, index=True)
    batch_id: str | None = Field(default=None, max_length=64)
    created_by: str = Field(max_length=64)
    # What an accepted proposal holds: [{listing_id, process, month, hours}] (released exactly).
    held: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSONType)
    created_at: dt.datetime = Field(default_factory=utcnow, sa_type=Timestamp)
    updated_at: dt.datetime = Field(default_factory=utcnow, sa_type=Timestamp)


class PairRule(SQLModel, table=True):
    """An operator's pin or ban of a (project, site) pair for the next match runs."""

    __tablename__ = "pair_rules"
    __table_args__ = (UniqueConstraint("project_id", "site_id"),)

    id: str = Field(primary_key=True, max_length=64)
    project_id: str = Field(
        foreign_key="projects.id", ondelete="CASCADE", max_length=64, index=True
    )
    site_id: str = Field(foreign_key="sites.id", ondelete="CASCADE", max_length=64)
    rule: str = Field(max_length=8)
    note: str = Field(default="", max_length=500)
    created_by: str = Field(max_length=64)
    created_at: dt.datetime = Field(default_factory=utcnow, sa_type=Timestamp)


class OrgEvent(SQLModel, table=True):
    """A notification to one organisation (the outbox): written in the transaction of the
    change it reports, then delivered to the organisation's webhook by a background deliverer."""

    __tablename__ = "org_events"

    id: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(
        foreign_key="organisations.id", ondelete="CASCADE", max_length=64, index=True
    )
    kind: str = Field(max_length=40)
    data: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    status: str = Field(max_length=16, index=True)  # schemas.api.DeliveryStatus
    attempts: int = 0
    next_attempt_at: dt.datetime | None = Field(default=None, sa_type=Timestamp, index=True)
    delivered_at: dt.datetime | None = Field(default=None, sa_type=Timestamp)
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=500)
    created_at: dt.datetime = Field(default_factory=utcnow, sa_type=Timestamp)


class WebhookDelivery(SQLModel, table=True):
    """One attempt to deliver an event to a webhook."""

    __tablename__ = "webhook_deliveries"

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(
        foreign_key="org_events.id", ondelete="CASCADE", max_length=64, index=True
    )
    attempt: int
    url: str = Field(max_length=2000)
    status_code: int | None = None
    error: str | None = Field(default=None, max_length=500)
    duration_ms: float
    at: dt.datetime = Field(default_factory=utcnow, sa_type=Timestamp)


class MarketState(SQLModel, table=True):
    """One stripe of the market version: every market write bumps one stripe (chosen at
    random) in its own transaction, and the version is the sum of all stripes. One row would
    make every market write in the database queue on its lock until the previous one commits
    (measured: 20 concurrent listing updates spent most of their time waiting on it)."""

    __tablename__ = "market_state"

    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    version: int = Field(default=0, sa_type=BigInteger)
    # Bumped (with ``version``) only by writes that change the supply side: sites and their
    # certifications, listings, capacity held or released by deals (``mark_supply_changed``).
    supply_version: int = Field(
        default=0, sa_type=BigInteger, sa_column_kwargs={"server_default": "0"}
    )


class MatchRun(SQLModel, table=True):
    """One optimiser run: request, lifecycle, progress, the snapshot it solved (compressed,
    for audit and replay) and its summary. The source of truth; Redis only carries the queue
    and the progress events."""

    __tablename__ = "match_runs"

    id: str = Field(primary_key=True, max_length=64)
    status: str = Field(max_length=16, index=True)
    dry_run: bool = False
    scope: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    params: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    replay_of: str | None = Field(default=None, max_length=64)
    created_by: str = Field(max_length=64)
    market_version: int | None = Field(default=None, sa_type=BigInteger)
    progress: dict[str, Any] | None = Field(default=None, sa_type=NullableJSON)
    summary: dict[str, Any] | None = Field(default=None, sa_type=NullableJSON)
    error: str | None = None
    attempts: int = 0
    worker_id: str | None = Field(default=None, max_length=128)
    cancel_requested: bool = False
    snapshot_gz: bytes | None = Field(default=None, sa_type=LargeBinary)
    snapshot_hash: str | None = Field(default=None, max_length=64)
    snapshot_bytes: int | None = None
    snapshot_pruned: bool = False
    versions: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    created_at: dt.datetime = Field(default_factory=utcnow, sa_type=Timestamp)
    enqueued_at: dt.datetime | None = Field(default=None, sa_type=Timestamp)
    started_at: dt.datetime | None = Field(default=None, sa_type=Timestamp)
    heartbeat_at: dt.datetime | None = Field(default=None, sa_type=Timestamp)
    finished_at: dt.datetime | None = Field(default=None, sa_type=Timestamp)


class MatchRunAssignment(SQLModel, table=True):
    """One placement of a run's answer; ``outcome`` is what the commit did with it."""

    __tablename__ = "match_run_assignments"

    run_id: str = Field(
        foreign_key="match_runs.id", ondelete="CASCADE", max_length=64, primary_key=True
    )
    pos: str = Field(max_length=12, primary_key=True)  # zero-padded: the page key
    project_id: str = Field(max_length=64)
    site_id: str = Field(max_length=64)
    cdmo_id: str = Field(max_length=64)
    role: str = Field(max_length=16)
    share: float
    value: float
    cost: float
    outcome: str | None = Field(default=None, max_length=16)
    detail: str | None = None


class MatchRunUnassigned(SQLModel, table=True):
    __tablename__ = "match_run_unassigned"

    run_id: str = Field(
        foreign_key="match_runs.id", ondelete="CASCADE", max_length=64, primary_key=True
    )
    pos: str = Field(max_length=12, primary_key=True)
    project_id: str = Field(max_length=64)
    reason: str = Field(max_length=32)
    detail: str
    shortfalls: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSONType)


class RunExplanation(SQLModel, table=True):
    """An explanation computed by the worker when its run committed (``kind`` ``project``:
    the maker's view of ``subject_id``; ``proposal``: the CDMO's view of a proposal the run
    made), so the API only reads it."""

    __tablename__ = "run_explanations"

    run_id: str = Field(
        foreign_key="match_runs.id", ondelete="CASCADE", max_length=64, primary_key=True
    )
    kind: str = Field(max_length=16, primary_key=True)
    subject_id: str = Field(max_length=64, primary_key=True)
    body: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)


class MatchRunEvent(SQLModel, table=True):
    """Progress events of a run when there is no Redis (the embedded default)."""

    __tablename__ = "match_run_events"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="match_runs.id", ondelete="CASCADE", max_length=64, index=True)
    kind: str = Field(max_length=16)
    data: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)


class IdempotencyRecord(SQLModel, table=True):
    """The first successful response to a POST that carried an ``Idempotency-Key``, written in
    the same transaction as what the POST created: either both are committed or neither."""

    __tablename__ = "idempotency_records"

    key: str = Field(primary_key=True, max_length=64)  # sha256(org, method, path, client key)
    fingerprint: str = Field(max_length=64)  # sha256 of the request body
    status: int
    headers: dict[str, str] = Field(default_factory=dict, sa_type=JSONType)
    body: str = Field(sa_type=Text)  # the response body as sent (JSON text)
    created_at: dt.datetime = Field(default_factory=utcnow, sa_type=Timestamp)
    expires_at: dt.datetime = Field(sa_type=Timestamp, index=True)
