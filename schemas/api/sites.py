"""CDMO sites: where they are, what they are certified for, what they make, how well."""

from __future__ import annotations

from typing import Any, Self

from pydantic import ConfigDict, Field, model_validator

from schemas.api.common import ApiModel, UniqueList, UtcDateTime
from schemas.market import (
    Certification,
    DeviceCategory,
    ProcessKind,
    QualityRecord,
    Region,
    RegulatoryClass,
)

_SITE_BODY: dict[str, Any] = {
    "name": "Budapest assembly centre",
    "country": "HU",
    "region": "EU",
    "overseas": True,
    "certifications": [
        {
            "kind": "iso_13485",
            "issuer": "TUV SUD",
            "device_classes": ["I", "II", "III"],
            "valid_from": "2025-03-01",
            "valid_until": "2028-02-28",
        },
        {
            "kind": "eu_mdr",
            "issuer": "BSI (NB 2797)",
            "device_classes": ["II", "III"],
            "valid_from": "2025-06-01",
            "valid_until": "2027-05-31",
        },
    ],
    "processes": ["cleanroom_assembly", "catheter_assembly", "eo_sterilisation"],
    "categories": ["implantable_interventional", "consumables"],
    "device_classes": ["II", "III"],
    "quality": {"inspection_findings": 2, "on_time_rate": 0.96, "lead_time_weeks": 6},
}


def _check_location(region: Region | None, country: str | None, overseas: bool | None) -> None:
    if country is not None and region is not None and (country == "CN") != (region == Region.CN):
        raise ValueError("country CN and region CN go together")
    if overseas and region == Region.CN:
        raise ValueError("an overseas site cannot be in region CN")


class SiteBase(ApiModel):
    name: str = Field(min_length=1, max_length=200)
    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2.")
    region: Region
    overseas: bool = Field(default=False, description="An overseas site of a Chinese CDMO.")
    certifications: list[Certification] = Field(default_factory=list, max_length=100)
    processes: UniqueList[ProcessKind] = Field(default_factory=list)
    categories: UniqueList[DeviceCategory] = Field(default_factory=list)
    device_classes: UniqueList[RegulatoryClass] = Field(
        default_factory=lambda: list(RegulatoryClass)
    )
    quality: QualityRecord = Field(default_factory=QualityRecord)

    @model_validator(mode="after")
    def _location_consistent(self) -> Self:
        _check_location(self.region, self.country, self.overseas)
        return self


class SiteCreate(SiteBase):
    model_config = ConfigDict(json_schema_extra={"examples": [_SITE_BODY]})

    cdmo_id: str | None = Field(
        default=None,
        max_length=64,
        description="Owner CDMO. Operators must set it; a CDMO may omit it (its own id).",
    )


class SiteUpdate(ApiModel):
    """Partial update: only the fields sent are changed; lists are replaced whole."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"quality": {"inspection_findings": 1, "on_time_rate": 0.97}}]
        }
    )

    name: str | None = Field(default=None, min_length=1, max_length=200)
    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    region: Region | None = None
    overseas: bool | None = None
    certifications: list[Certification] | None = Field(default=None, max_length=100)
    processes: UniqueList[ProcessKind] | None = None
    categories: UniqueList[DeviceCategory] | None = None
    device_classes: UniqueList[RegulatoryClass] | None = None
    quality: QualityRecord | None = None


class SitePublic(SiteBase):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "site_01JD8Q9V2B3C4D5E6F7G8H9J0K",
                    "cdmo_id": "org_01JD8Q4T5M6N7P8Q9R0S1T2V3W",
                    **_SITE_BODY,
                    "version": 3,
                    "created_at": "2026-11-02T09:40:00Z",
                    "updated_at": "2026-11-20T14:05:00Z",
                }
            ]
        }
    )

    id: str
    cdmo_id: str
    version: int = Field(description="Bumped on every change; the ETag of the site.")
    created_at: UtcDateTime
    updated_at: UtcDateTime
