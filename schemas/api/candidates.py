"""Instant candidates: the sites a project could be placed at now, and the near misses.

An instant quote, computed against the current listings with the batch's own rules and
value formula (``matcher.candidates``); nothing is written.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

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


class CandidatesPublic(ApiModel):
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
