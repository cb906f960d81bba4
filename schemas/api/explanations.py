"""Explanations computed from a committed run (why this site, why not placed) and run
analytics (utilisation, bottlenecks). Figures, not templates: every number comes from the
run's stored snapshot re-encoded and its answer (see service/flows/explanations.py)."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from schemas.api.common import ApiModel, UtcDateTime
from schemas.market import BlockReason, ProcessKind, Role

_FROM = ConfigDict(from_attributes=True)


# --- examples (from a real run of tests/service/test_api_explanations.py's market) ---------

PROJECT_PLACED_EXAMPLE: dict[str, Any] = {
    "project_id": "prj_01HZX3PLACED00000000000000",
    "run": {
        "run_id": "run_01HZX3RUN0000000000000000",
        "finished_at": "2027-01-05T09:30:00Z",
        "market_version": 15,
    },
    "placed": True,
    "placements": [
        {
            "role": "primary",
            "share": 1.0,
            "site_id": "site_01HZX3GOODPLANT0000000000",
            "cdmo_id": "org_01HZX3CDMOA00000000000000",
            "cost": 28800.0,
            "breakdown": {
                "value": 13065,
                "priority": 9000.0,
                "quality": 3228.3173,
                "market": 1125.0,
                "cost": -288.0,
                "stability": 0.0,
                "rounding": -0.3173,
            },
            "quality": 0.9565,
            "in_target_market": True,
            "previous_site": False,
            "eligible_sites": 1,
            "rank": 1,
            "alternatives": [
                {
                    "site_id": "site_01HZX3RIVALPLANT000000000",
                    "cdmo_id": "org_01HZX3RIVAL0000000000000",
                    "eligible": False,
                    "value": 13082,
                    "value_given_up": -17,
                    "lacks": "excluded",
                    "detail": "would be worth 17 points more but its CDMO is excluded by the maker",
                    "breakdown": {
                        "value": 13082,
                        "priority": 9000.0,
                        "quality": 3245.1923,
                        "market": 1125.0,
                        "cost": -288.0,
                        "stability": 0.0,
                        "rounding": -0.1923,
                    },
                    "shortfalls": [],
                }
            ],
            "summary": "site_01HZX3GOODPLANT0000000000 is worth 13065 points for this "
            "project: priority 9000, fit +4353 (quality score 0.96, in a "
            "target market), cost -288, stability +0; ranked 1 of 1 eligible "
            "sites by value",
        }
    ],
    "unplaced": None,
    "stored_reason": None,
    "summary": "site_01HZX3GOODPLANT0000000000 is worth 13065 points for this project: priority "
    "9000, fit +4353 (quality score 0.96, in a target market), cost -288, stability "
    "+0; ranked 1 of 1 eligible sites by value",
}

PROJECT_UNPLACED_EXAMPLE: dict[str, Any] = {
    "project_id": "prj_01HZX3CROWDED0000000000000",
    "run": {
        "run_id": "run_01HZX3RUN0000000000000000",
        "finished_at": "2027-01-05T09:30:00Z",
        "market_version": 15,
    },
    "placed": False,
    "placements": [],
    "unplaced": {
        "role": "primary",
        "reason": "capacity",
        "detail": "2 of 3 sites pass every rule but capacity; all 2 are full once the "
        "run's answer is served: 2 short in catheter_assembly 2027-02 by 200 "
        "h in total (240 h short over every listed month)",
        "total_sites": 3,
        "funnel": [
            {"rule": "category_or_class", "eliminated": 0, "remaining": 3},
            {"rule": "process", "eliminated": 0, "remaining": 3},
            {"rule": "certification", "eliminated": 0, "remaining": 3},
            {"rule": "market", "eliminated": 0, "remaining": 3},
            {"rule": "excluded", "eliminated": 1, "remaining": 2},
            {"rule": "budget", "eliminated": 0, "remaining": 2},
        ],
        "certifications": [{"requirement": "iso_13485", "sites": 3}],
        "markets": [{"requirement": "CN", "sites": 3}],
        "capacity_sites": 2,
        "capacity_gaps": [
            {
                "process": "catheter_assembly",
                "month": "2027-02",
                "sites_short": 2,
                "short_hours": 200,
            },
            {
                "process": "catheter_assembly",
                "month": "2027-03",
                "sites_short": 1,
                "short_hours": 40,
            },
        ],
        "shortfalls": [
            {
                "site_id": "site_01HZX3GOODPLANT0000000000",
                "process": "catheter_assembly",
                "month": "2027-02",
                "short_hours": 110,
            },
            {
                "site_id": "site_01HZX3GOODPLANT0000000000",
                "process": "catheter_assembly",
                "month": "2027-03",
                "short_hours": 40,
            },
            {
                "site_id": "site_01HZX3SMALLPLANT000000000",
                "process": "catheter_assembly",
                "month": "2027-02",
                "short_hours": 90,
            },
        ],
    },
    "stored_reason": "capacity",
    "summary": "not placed (capacity): 2 of 3 sites pass every rule but capacity; all 2 are "
    "full once the run's answer is served: 2 short in catheter_assembly 2027-02 by "
    "200 h in total (240 h short over every listed month)",
}

PROPOSAL_EXAMPLE: dict[str, Any] = {
    "proposal_id": "prp_01HZX3PROPOSAL00000000000",
    "project_id": "prj_01HZX3PLACED00000000000000",
    "site_id": "site_01HZX3GOODPLANT0000000000",
    "role": "primary",
    "run": {
        "run_id": "run_01HZX3RUN0000000000000000",
        "finished_at": "2027-01-05T09:30:00Z",
        "market_version": 15,
    },
    "site": {
        "quality": 0.9565,
        "on_time_rate": 0.99,
        "inspection_findings": 0,
        "lead_time_weeks": 4,
        "in_target_market": True,
        "fit_points_share": 0.326,
        "cost": 28800.0,
        "previous_site": False,
        "fits_capacity": True,
    },
    "rank": 1,
    "summary": "your site site_01HZX3GOODPLANT0000000000 came 1st by the matcher's value among "
    "the sites eligible for this project: quality score 0.96 (on time 99%, 0 "
    "inspection finding(s), 4 weeks lead time), in a target market, cost 28,800 at "
    "your prices",
}

UTILISATION_EXAMPLE: dict[str, Any] = {
    "run": {
        "run_id": "run_01HZX3RUN0000000000000000",
        "finished_at": "2027-01-05T09:30:00Z",
        "market_version": 15,
    },
    "totals": [
        {
            "process": "catheter_assembly",
            "month": "2027-01",
            "capacity_hours": 800.0,
            "reserved_hours": 0.0,
            "used_hours": 100,
            "free_hours": 700.0,
            "utilisation": 0.125,
        }
    ],
    "items": [
        {
            "site_id": "site_01HZX3GOODPLANT0000000000",
            "process": "catheter_assembly",
            "month": "2027-01",
            "capacity_hours": 200.0,
            "reserved_hours": 0.0,
            "used_hours": 100,
            "free_hours": 100.0,
        }
    ],
    "next_cursor": "eyJhZnRlciI6IjAwMDAwMDAwMDIifQ",
}

BOTTLENECKS_EXAMPLE: dict[str, Any] = {
    "run": {
        "run_id": "run_01HZX3RUN0000000000000000",
        "finished_at": "2027-01-05T09:30:00Z",
        "market_version": 15,
    },
    "unplaced_projects": 2,
    "unmet_hours": 750.0,
    "by_category": [{"key": "implantable_interventional", "projects": 2, "hours": 750.0}],
    "by_market": [
        {"key": "CN", "projects": 1, "hours": 390.0},
        {"key": "US", "projects": 1, "hours": 360.0},
    ],
    "by_reason": [
        {"key": "capacity", "projects": 1, "hours": 390.0},
        {"key": "certification", "projects": 1, "hours": 360.0},
    ],
    "certifications": [{"key": "fda_registration", "projects": 1, "hours": 360.0}],
    "markets": [],
    "capacity": [
        {"process": "catheter_assembly", "month": "2027-02", "projects": 1, "short_hours": 200}
    ],
}


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


class ValueBreakdown(ApiModel):
    """A placement's value (the matcher's points) and its parts; the parts sum to ``value``."""

    model_config = _FROM
    value: int = Field(description="The matcher's value of the placement, in points.")
    priority: float = Field(description="share x priority weight x priority")
    quality: float = Field(description="fit from the site's quality record")
    market: float = Field(description="fit from the site being in a target market")
    cost: float = Field(description="- cost weight x price x hours")
    stability: float = Field(description="bonus for staying at the previous proposal's site")
    rounding: float = Field(description="the matcher rounds the sum to whole points")


class Shortfall(ApiModel):
    model_config = _FROM
    site_id: str
    process: ProcessKind
    month: str
    short_hours: int


class Alternative(ApiModel):
    model_config = _FROM
    site_id: str
    cdmo_id: str
    eligible: bool
    value: int
    value_given_up: int = Field(description="Chosen value minus this one (negative: worth more).")
    lacks: str = Field(description="'' (room, worth less), 'capacity', or the rule failed.")
    detail: str
    breakdown: ValueBreakdown
    shortfalls: list[Shortfall]


class PlacementExplanation(ApiModel):
    model_config = _FROM
    role: Role
    share: float
    site_id: str
    cdmo_id: str
    cost: float = Field(description="Price x hours at this site (currency).")
    breakdown: ValueBreakdown
    quality: float = Field(description="The site's quality score in [0, 1].")
    in_target_market: bool
    previous_site: bool
    eligible_sites: int
    rank: int = Field(description="1 = the eligible site of highest value for this source.")
    alternatives: list[Alternative]
    summary: str
    outcome: str | None = Field(
        default=None, description="What the run's commit did with it: proposed, unchanged, skipped."
    )
    outcome_detail: str | None = None


class FunnelStep(ApiModel):
    model_config = _FROM
    rule: str
    eliminated: int
    remaining: int


class RequirementCount(ApiModel):
    model_config = _FROM
    requirement: str
    sites: int = Field(description="Sites reaching that rule that meet this requirement.")


class CapacityGap(ApiModel):
    model_config = _FROM
    process: ProcessKind
    month: str
    sites_short: int
    short_hours: int


class UnplacedExplanation(ApiModel):
    model_config = _FROM
    role: Role
    reason: BlockReason = Field(description="The binding reason, recomputed.")
    detail: str
    total_sites: int
    funnel: list[FunnelStep]
    certifications: list[RequirementCount]
    markets: list[RequirementCount]
    capacity_sites: int = Field(description="Sites passing every rule but capacity.")
    capacity_gaps: list[CapacityGap]
    shortfalls: list[Shortfall]


class RunRef(ApiModel):
    run_id: str
    finished_at: UtcDateTime | None
    market_version: int | None


class ProjectExplanation(ApiModel):
    """Why a project is where the latest committed run put it, or why it is not placed."""

    model_config = _examples(PROJECT_PLACED_EXAMPLE, PROJECT_UNPLACED_EXAMPLE)

    project_id: str
    run: RunRef
    placed: bool
    placements: list[PlacementExplanation]
    unplaced: UnplacedExplanation | None
    stored_reason: BlockReason | None = Field(
        default=None, description="The reason the run recorded when it could not place it."
    )
    summary: str


class SiteFit(ApiModel):
    """What a CDMO may see of why its site was chosen: its own figures only."""

    quality: float
    on_time_rate: float
    inspection_findings: int
    lead_time_weeks: int
    in_target_market: bool
    fit_points_share: float = Field(
        description="Fit's share of the placement's value before cost (0..1)."
    )
    cost: float = Field(description="Your price x the project's hours (currency).")
    previous_site: bool
    fits_capacity: bool = Field(description="The load fits your free hours in every month.")


class ProposalExplanation(ApiModel):
    """Why a proposal's site was chosen, without any of the maker's confidential fields
    (budget, exclusions, priority, points; title and maker when confidential)."""

    model_config = _examples(PROPOSAL_EXAMPLE)

    proposal_id: str
    project_id: str
    site_id: str
    role: Role
    run: RunRef
    site: SiteFit
    rank: int = Field(description="1 = the best eligible site by the matcher's value.")
    summary: str


class UtilisationRow(ApiModel):
    model_config = _FROM
    site_id: str
    process: ProcessKind
    month: str
    capacity_hours: float
    reserved_hours: float
    used_hours: int
    free_hours: float


class UtilisationTotal(ApiModel):
    process: ProcessKind
    month: str
    capacity_hours: float
    reserved_hours: float
    used_hours: int
    free_hours: float
    utilisation: float = Field(description="(reserved + used) / capacity, 0 when no capacity.")


class RunUtilisation(ApiModel):
    model_config = _examples(UTILISATION_EXAMPLE)
    run: RunRef
    totals: list[UtilisationTotal] = Field(description="Per process and month, all sites.")
    items: list[UtilisationRow] = Field(description="Per site, process and month (paged).")
    next_cursor: str | None


class DemandGroup(ApiModel):
    model_config = _FROM
    key: str
    projects: int
    hours: float


class MonthGap(ApiModel):
    model_config = _FROM
    process: ProcessKind
    month: str
    projects: int
    short_hours: int


class RunBottlenecks(ApiModel):
    model_config = ConfigDict(from_attributes=True, **_examples(BOTTLENECKS_EXAMPLE))
    run: RunRef
    unplaced_projects: int
    unmet_hours: float
    by_category: list[DemandGroup]
    by_market: list[DemandGroup]
    by_reason: list[DemandGroup]
    certifications: list[DemandGroup] = Field(description="Certificates that bind.")
    markets: list[DemandGroup] = Field(description="Target markets no passing site serves.")
    capacity: list[MonthGap] = Field(description="Process-months where every passing site is full.")
