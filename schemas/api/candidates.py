"""Instant candidates: the sites a project could be placed at now, and the near misses.

An instant quote, computed against the current listings with the batch's own rules and
value formula (``matcher.candidates``); nothing is written.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import ConfigDict, Field

from schemas.api.common import ApiModel
from schemas.market import ProcessKind, Region, Role, YearMonth

MAX_CANDIDATES = 50
DEFAULT_CANDIDATES = 10


class CandidateRule(StrEnum):
    """The rule that excludes a site, in the batch's test order (the first one failed counts)."""

    CATEGORY_OR_CLASS = "category_or_class"
    PROCESS = "process"
    CERTIFICATION = "certification"
    MARKET = "market"  # neither in a target market nor holding its market-access certificate
    EXCLUDED = "excluded"
    BUDGET = "budget"
    CAPACITY = "capacity"
    SECOND_SOURCE_SEPARATION = "second_source_separation"


class ValueParts(ApiModel):
    """The terms of the value the optimiser gives this placement (points); ``value`` is their
    sum rounded to the nearest point, exactly as the optimiser ranks it."""

    priority: float = Field(description="share x priority weight x priority")
    quality: float = Field(description="priority term x fit weight x quality share of fit")
    market: float = Field(description="priority term x fit weight x market share of fit")
    cost: float = Field(description="- cost weight x cost")
    stability: float = Field(description="bonus for staying at the current proposal's site")


class ProcessCapacity(ApiModel):
    """One required process at one site over the project's window, in whole hours (loads
    rounded up, free capacity down, as the optimiser counts them)."""

    process: ProcessKind
    needed_hours: float = Field(description="This source's load over the window.")
    free_hours: float = Field(description="Free capacity over the window.")
    short_hours: float = Field(description="Sum over months of load beyond free capacity.")
    short_months: list[YearMonth] = Field(description="Months where the load does not fit.")


class SiteCandidate(ApiModel):
    site_id: str
    cdmo_id: str
    site_name: str
    region: Region
    value: int = Field(description="The optimiser's value of this placement (points).")
    value_parts: ValueParts
    cost: float = Field(description="Load x price per hour over the window (currency).")
    fit: float = Field(description="Fit in [0, 1]: quality share plus target-market share.")
    quality: float = Field(description="Site quality in [0, 1] (on-time, findings, lead time).")
    in_target_market: bool
    capacity: list[ProcessCapacity]
    capacity_suffices: bool = Field(description="Every month of every process fits.")


class NearMiss(SiteCandidate):
    """A site that passes every rule but one: that rule, why, and what it would be worth."""

    rule: CandidateRule
    detail: str


class RuleCounts(ApiModel):
    """Sites set aside by each rule (the first rule a site fails counts), and the rest."""

    category_or_class: int
    process: int
    certification: int
    market: int
    excluded: int
    budget: int
    capacity: int
    eligible: int


class SourceCandidates(ApiModel):
    """Candidates for one source: the project itself, or, for a project that needs a second
    source, its primary and its second source (each carrying its share of every load)."""

    role: Role
    share: float
    counts: RuleCounts
    candidates: list[SiteCandidate] = Field(description="Best eligible sites, by value.")
    near_misses: list[NearMiss] = Field(
        description="Best sites excluded by exactly one rule, by the value they would have."
    )


class Blocker(ApiModel):
    rule: CandidateRule
    detail: str


_CAPACITY: dict[str, Any] = {
    "process": "catheter_assembly",
    "needed_hours": 360.0,
    "free_hours": 1350.0,
    "short_hours": 0.0,
    "short_months": [],
}
_CANDIDATE: dict[str, Any] = {
    "site_id": "site_01JD8Q9V2B3C4D5E6F7G8H9J0K",
    "cdmo_id": "org_01JD8Q4T5M6N7P8Q9R0S1T2V3W",
    "site_name": "Suzhou plant",
    "region": "CN",
    "value": 10383,
    "value_parts": {
        "priority": 7000.0,
        "quality": 2499.7,
        "market": 875.0,
        "cost": -216.0,
        "stability": 0.0,
    },
    "cost": 21600.0,
    "fit": 0.964,
    "quality": 0.952,
    "in_target_market": True,
    "capacity": [_CAPACITY],
    "capacity_suffices": True,
}
_EXAMPLE: dict[str, Any] = {
    "market_version": 1842,
    "project_id": "prj_01JD8QD4E5F6G7H8J9K0M1N2P3",
    "window_start": "2027-01",
    "window_end": "2027-03",
    "placeable": True,
    "sources": [
        {
            "role": "primary",
            "share": 1.0,
            "counts": {
                "category_or_class": 1,
                "process": 0,
                "certification": 1,
                "market": 0,
                "excluded": 0,
                "budget": 0,
                "capacity": 1,
                "eligible": 2,
            },
            "candidates": [_CANDIDATE],
            "near_misses": [
                {
                    **_CANDIDATE,
                    "site_id": "site_01JD8QA1B2C3D4E5F6G7H8J9K0",
                    "site_name": "Wuxi plant",
                    "value": 10441,
                    "capacity": [{**_CAPACITY, "short_hours": 20.0, "short_months": ["2027-02"]}],
                    "capacity_suffices": False,
                    "rule": "capacity",
                    "detail": "short of free capacity by 20 h in total (catheter_assembly 2027-02)",
                }
            ],
        }
    ],
    "blockers": [],
}


class CandidatesPublic(ApiModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    market_version: int = Field(description="The market version the answer was computed at.")
    project_id: str | None = Field(description="None for a draft body.")
    window_start: YearMonth
    window_end: YearMonth
    placeable: bool = Field(description="At least one placement obeys every rule now.")
    sources: list[SourceCandidates]
    blockers: list[Blocker] = Field(
        default_factory=list,
        description="Why no placement obeys every rule (per source, or the second-source "
        "separation: the two sources must be at two different CDMOs).",
    )
