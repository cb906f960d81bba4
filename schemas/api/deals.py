"""Deals and notifications: proposal moves, capacity holds, pair rules, webhooks and events."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import ConfigDict, Field

from schemas.api.common import ApiModel, ProposalStatus, UtcDateTime
from schemas.market import Identifier, ProcessKind, YearMonth


class ProposalAction(StrEnum):
    """The explicit action endpoints ``POST /v1/proposals/{id}/{action}``."""

    ACCEPT = "accept"
    DECLINE = "decline"
    CONFIRM = "confirm"
    WITHDRAW = "withdraw"


ACTION_TARGET: dict[ProposalAction, ProposalStatus] = {
    ProposalAction.ACCEPT: ProposalStatus.ACCEPTED,
    ProposalAction.DECLINE: ProposalStatus.DECLINED,
    ProposalAction.CONFIRM: ProposalStatus.CONFIRMED,
    ProposalAction.WITHDRAW: ProposalStatus.WITHDRAWN,
}


class HeldHours(ApiModel):
    """Whole hours a proposal holds in one listing (added to its ``reserved_hours``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "listing_id": "lst_01JD8QB1C2D3E4F5G6H7J8K9M0",
                    "process": "cleanroom_assembly",
                    "month": "2027-03",
                    "hours": 120,
                }
            ]
        }
    )

    listing_id: str
    process: ProcessKind
    month: YearMonth
    hours: int = Field(ge=0)


class Shortfall(ApiModel):
    """Where an acceptance does not fit: in the body of its 409 (``shortfalls``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "process": "cleanroom_assembly",
                    "month": "2027-03",
                    "needed_hours": 140,
                    "free_hours": 20,
                    "short_hours": 120,
                }
            ]
        }
    )

    process: ProcessKind
    month: YearMonth
    needed_hours: int
    free_hours: int
    short_hours: int


class PairRuleKind(StrEnum):
    PIN = "pin"
    FORBID = "forbid"


class PairRuleCreate(ApiModel):
    """An operator's rule for the next match runs: pin a project to a site, or forbid it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "project_id": "prj_01JD8QD4E5F6G7H8J9K0M1N2P3",
                    "site_id": "site_01JD8Q9V2B3C4D5E6F7G8H9J0K",
                    "rule": "forbid",
                    "note": "audit finding at this site",
                }
            ]
        }
    )

    project_id: Identifier
    site_id: Identifier
    rule: PairRuleKind
    note: str = Field(default="", max_length=500)


_RULE_EXAMPLE: dict[str, Any] = {
    "id": "rule_01JD8QH1J2K3M4N5P6Q7R8S9T0",
    "project_id": "prj_01JD8QD4E5F6G7H8J9K0M1N2P3",
    "site_id": "site_01JD8Q9V2B3C4D5E6F7G8H9J0K",
    "rule": "forbid",
    "note": "audit finding at this site",
    "created_by": "org_01JD8Q2R3S4T5V6W7X8Y9Z0A1B",
    "created_at": "2026-12-01T09:00:00Z",
}


class PairRulePublic(PairRuleCreate):
    model_config = ConfigDict(json_schema_extra={"examples": [_RULE_EXAMPLE]})

    id: str
    created_by: str
    created_at: UtcDateTime


class WebhookSet(ApiModel):
    """Where the organisation's events are POSTed. A new signing secret is made each time."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"url": "https://hooks.example.com/cdmo"}]}
    )

    url: str = Field(
        min_length=8,
        max_length=2000,
        pattern=r"^https?://[^\s]+$",
        description="http(s) URL that receives a POST per event.",
    )


class WebhookPublic(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "url": "https://hooks.example.com/cdmo",
                    "secret": "whsec_3q2+7w...",
                    "signature_header": "CDMO-Signature",
                }
            ]
        }
    )

    url: str | None
    secret: str | None = Field(
        default=None, description="Shown once, when the webhook is set: keep it to verify."
    )
    signature_header: str = "CDMO-Signature"


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # waiting for its (next) attempt
    DELIVERED = "delivered"
    FAILED = "failed"  # every attempt failed
    NO_WEBHOOK = "no_webhook"  # the organisation had no webhook when it happened


_EVENT_EXAMPLE: dict[str, Any] = {
    "id": "evt_01JD8QJ1K2M3N4P5Q6R7S8T9V0",
    "type": "proposal.accepted",
    "created_at": "2026-12-01T09:00:00Z",
    "data": {
        "proposal_id": "prp_01JD8QF6G7H8J9K0M1N2P3Q4R5",
        "project_id": "prj_01JD8QD4E5F6G7H8J9K0M1N2P3",
        "site_id": "site_01JD8Q9V2B3C4D5E6F7G8H9J0K",
        "role": "primary",
        "status": "accepted",
        "previous_status": "proposed",
    },
    "delivery": {
        "status": "delivered",
        "attempts": 1,
        "last_status_code": 200,
        "last_error": None,
        "delivered_at": "2026-12-01T09:00:01Z",
    },
}


class EventDelivery(ApiModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_EVENT_EXAMPLE["delivery"]]})

    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    delivered_at: UtcDateTime | None


class EventPublic(ApiModel):
    """One notification to an organisation (the webhook body is ``id``, ``type``,
    ``created_at`` and ``data``)."""

    model_config = ConfigDict(json_schema_extra={"examples": [_EVENT_EXAMPLE]})

    id: str
    type: str
    created_at: UtcDateTime
    data: dict[str, Any]
    delivery: EventDelivery
