"""Explanations computed from a committed run (why this site, why not placed) and run
analytics (utilisation, bottlenecks). Figures, not templates: every number comes from the
run's stored snapshot re-encoded and its answer (see service/flows/explanations.py)."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from schemas.api.common import ApiModel, UtcDateTime
from schemas.market import BlockReason, ProcessKind, Role

_FROM = ConfigDict(from_attributes=True)


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
    model_config = _FROM
    run: RunRef
    unplaced_projects: int
    unmet_hours: float
    by_category: list[DemandGroup]
    by_market: list[DemandGroup]
    by_reason: list[DemandGroup]
    certifications: list[DemandGroup] = Field(description="Certificates that bind.")
    markets: list[DemandGroup] = Field(description="Target markets no passing site serves.")
    capacity: list[MonthGap] = Field(description="Process-months where every passing site is full.")
