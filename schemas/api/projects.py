"""Makers' projects: what they need made, where it will be sold, when, under which controls."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from schemas.api.common import ApiModel, ProjectStatus, UniqueList, UtcDateTime
from schemas.market import (
    CertificationKind,
    DeviceCategory,
    Identifier,
    ProcessKind,
    ProcessLoad,
    Region,
    RegulatoryClass,
    SecondSourceSeparation,
    Stage,
    YearMonth,
    month_index,
)

MAX_WINDOW_MONTHS = 120

_PROJECT_BODY: dict[str, Any] = {
    "title": "Drug-coated balloon catheter, pilot and launch",
    "category": "implantable_interventional",
    "device_class": "III",
    "target_markets": ["CN", "EU"],
    "required_certifications": ["iso_13485", "eu_mdr", "sterilisation_eo"],
    "window_start": "2027-01",
    "window_end": "2027-03",
    "loads": [
        {"process": "catheter_assembly", "monthly_hours": [120.0, 160.0, 200.0]},
        {"process": "eo_sterilisation", "monthly_hours": [20.0, 24.0, 30.0]},
    ],
    "stage": "pilot",
    "priority": 8,
    "budget_ceiling": 250000.0,
    "excluded_cdmo_ids": ["org_01JD8QC0MPET1T0R000000000"],
    "second_source_required": False,
    "second_source_share": 0.3,
    "second_source_separation": "region",
    "confidential": True,
}
_META: dict[str, Any] = {
    "id": "prj_01JD8QD4E5F6G7H8J9K0M1N2P3",
    "maker_id": "org_01JD8QE5F6G7H8J9K0M1N2P3Q4",
    "status": "open",
    "version": 2,
    "created_at": "2026-11-03T11:00:00Z",
    "updated_at": "2026-11-04T16:20:00Z",
}


def _check_window(start: str | None, end: str) -> None:
    if start is None:
        return
    months = month_index(end) - month_index(start) + 1
    if months < 1:
        raise ValueError("window_end is before window_start")
    if months > MAX_WINDOW_MONTHS:
        raise ValueError(f"the window is longer than {MAX_WINDOW_MONTHS} months")


def _check_loads(loads: list[ProcessLoad], start: str | None, end: str | None) -> None:
    seen: set[ProcessKind] = set()
    months = None
    if start is not None and end is not None:
        months = month_index(end) - month_index(start) + 1
    for i, load in enumerate(loads):
        if load.process in seen:
            raise ValueError(f"loads.{i}: process {load.process} is listed twice")
        seen.add(load.process)
        if months is not None and months >= 1 and len(load.monthly_hours) != months:
            raise ValueError(
                f"loads.{i}: {len(load.monthly_hours)} monthly values for {load.process}, "
                f"the window has {months} months"
            )


class ProjectFields(ApiModel):
    """Every field a maker controls. Field order matters: windows are checked before loads."""

    title: str = Field(min_length=1, max_length=200)
    category: DeviceCategory
    device_class: RegulatoryClass
    target_markets: UniqueList[Region] = Field(min_length=1)
    required_certifications: UniqueList[CertificationKind] = Field(default_factory=list)
    window_start: YearMonth
    window_end: YearMonth
    loads: list[ProcessLoad] = Field(min_length=1, max_length=len(ProcessKind))
    stage: Stage = Stage.DEVELOPMENT
    priority: int = Field(default=5, ge=1, le=10)
    budget_ceiling: float | None = Field(default=None, gt=0, le=1e12, description="Max total cost.")
    excluded_cdmo_ids: UniqueList[Identifier] = Field(
        default_factory=list, max_length=200, description="CDMOs never to be proposed."
    )
    second_source_required: bool = False
    second_source_share: float = Field(
        default=0.3, gt=0, le=0.5, description="Share of every load made by the second source."
    )
    second_source_separation: SecondSourceSeparation = Field(
        default=SecondSourceSeparation.REGION,
        description="region: the second source is at a different CDMO in a different region "
        "from the primary (the default); cdmo: at a different CDMO, in any region.",
    )
    confidential: bool = Field(
        default=True, description="Hide title and maker from CDMOs the project is proposed to."
    )

    @field_validator("window_end")
    @classmethod
    def _window_ordered(cls, end: str, info: ValidationInfo) -> str:
        _check_window(info.data.get("window_start"), end)
        return end

    @field_validator("loads")
    @classmethod
    def _loads_fit_window(cls, loads: list[ProcessLoad], info: ValidationInfo) -> list[ProcessLoad]:
        _check_loads(loads, info.data.get("window_start"), info.data.get("window_end"))
        return loads


class ProjectCreate(ProjectFields):
    model_config = ConfigDict(json_schema_extra={"examples": [_PROJECT_BODY]})

    maker_id: str | None = Field(
        default=None,
        max_length=64,
        description="Owner maker. Operators must set it; a maker may omit it (its own id).",
    )
    status: Literal[ProjectStatus.DRAFT, ProjectStatus.OPEN] = Field(
        default=ProjectStatus.OPEN, description="`draft` keeps it out of matching."
    )


class ProjectUpdate(ApiModel):
    """Partial update: only the fields sent change; lists are replaced whole.

    The result of applying it is validated like a new project (windows, loads).
    """

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"priority": 9, "budget_ceiling": 300000.0}]}
    )

    title: str | None = Field(default=None, min_length=1, max_length=200)
    category: DeviceCategory | None = None
    device_class: RegulatoryClass | None = None
    target_markets: UniqueList[Region] | None = Field(default=None, min_length=1)
    required_certifications: UniqueList[CertificationKind] | None = None
    window_start: YearMonth | None = None
    window_end: YearMonth | None = None
    loads: list[ProcessLoad] | None = Field(default=None, min_length=1, max_length=len(ProcessKind))
    stage: Stage | None = None
    priority: int | None = Field(default=None, ge=1, le=10)
    budget_ceiling: float | None = Field(default=None, gt=0, le=1e12)
    excluded_cdmo_ids: UniqueList[Identifier] | None = Field(default=None, max_length=200)
    second_source_required: bool | None = None
    second_source_share: float | None = Field(default=None, gt=0, le=0.5)
    second_source_separation: SecondSourceSeparation | None = None
    confidential: bool | None = None
    status: ProjectStatus | None = Field(
        default=None,
        description="Makers may move a project between draft, open and closed; "
        "proposed and matched are set by proposals.",
    )


class ProjectPublic(ProjectFields):
    """The full project, as its maker and operators see it."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{**_META, **_PROJECT_BODY, "view": "full"}]}
    )

    view: Literal["full"] = "full"
    id: str
    maker_id: str
    status: ProjectStatus
    version: int = Field(description="Bumped on every change; the ETag of the project.")
    created_at: UtcDateTime
    updated_at: UtcDateTime


class ProjectRedacted(ApiModel):
    """A project as a CDMO it was proposed to sees it: no budget, exclusions or priority;
    no title or maker when the project is confidential."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "view": "redacted",
                    "id": _META["id"],
                    "maker_id": None,
                    "title": None,
                    "status": "proposed",
                    **{
                        k: _PROJECT_BODY[k]
                        for k in (
                            "category",
                            "device_class",
                            "target_markets",
                            "required_certifications",
                            "window_start",
                            "window_end",
                            "loads",
                            "stage",
                            "second_source_required",
                            "second_source_share",
                            "confidential",
                        )
                    },
                    "updated_at": _META["updated_at"],
                }
            ]
        }
    )

    view: Literal["redacted"] = "redacted"
    id: str
    maker_id: str | None
    title: str | None
    status: ProjectStatus
    category: DeviceCategory
    device_class: RegulatoryClass
    target_markets: list[Region]
    required_certifications: list[CertificationKind]
    window_start: YearMonth
    window_end: YearMonth
    loads: list[ProcessLoad]
    stage: Stage
    second_source_required: bool
    second_source_share: float
    confidential: bool
    updated_at: UtcDateTime


ProjectView = Annotated[ProjectPublic | ProjectRedacted, Field(discriminator="view")]
