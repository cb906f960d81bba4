"""Proposals: a project put to a CDMO site, by an operator or an optimisation batch."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from schemas.api.common import ApiModel, ProposalStatus, UtcDateTime
from schemas.api.deals import HeldHours
from schemas.market import Identifier, Region, Role

_PROPOSAL_EXAMPLE: dict[str, Any] = {
    "id": "prp_01JD8QF6G7H8J9K0M1N2P3Q4R5",
    "project_id": "prj_01JD8QD4E5F6G7H8J9K0M1N2P3",
    "site_id": "site_01JD8Q9V2B3C4D5E6F7G8H9J0K",
    "cdmo_id": "org_01JD8Q4T5M6N7P8Q9R0S1T2V3W",
    "role": "primary",
    "status": "proposed",
    "batch_id": None,
    "site_name": "Budapest assembly centre",
    "site_country": "HU",
    "site_region": "EU",
    "cdmo_name": "Suzhou Precision Medical CDMO",
    "held": [],
    "expires_at": "2026-11-12T08:00:00Z",
    "created_at": "2026-11-05T08:00:00Z",
    "updated_at": "2026-11-05T08:00:00Z",
}


class ProposalCreate(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "project_id": _PROPOSAL_EXAMPLE["project_id"],
                    "site_id": _PROPOSAL_EXAMPLE["site_id"],
                    "role": "primary",
                }
            ]
        }
    )

    project_id: Identifier
    site_id: Identifier
    role: Role = Role.PRIMARY
    batch_id: Identifier | None = Field(
        default=None, description="The optimisation batch that made it, if any."
    )


class ProposalDecision(ApiModel):
    """A move of the proposal's lifecycle: the CDMO accepts or declines, the maker confirms
    or withdraws, an operator may do any of them (the same rules as the action endpoints)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"status": "accepted"}, {"status": "confirmed"}]}
    )

    status: Literal[
        ProposalStatus.ACCEPTED,
        ProposalStatus.DECLINED,
        ProposalStatus.CONFIRMED,
        ProposalStatus.WITHDRAWN,
    ]


class ProposalPublic(ApiModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_PROPOSAL_EXAMPLE]})

    id: str
    project_id: str
    site_id: str
    cdmo_id: str
    role: Role
    status: ProposalStatus
    batch_id: str | None
    site_name: str
    site_country: str
    site_region: Region
    cdmo_name: str
    held: list[HeldHours] = Field(
        default_factory=list,
        description="Hours this proposal holds in the site's listings (accepted/confirmed).",
    )
    expires_at: UtcDateTime | None = Field(
        default=None,
        description="When a proposed or accepted proposal not acted on expires; None after.",
    )
    created_at: UtcDateTime
    updated_at: UtcDateTime


class MarketVersion(ApiModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"version": 1842}]})

    version: int = Field(
        ge=0, description="Bumped by every write to sites, listings, projects and proposals."
    )
