"""Capacity listings: free hours of one site for one process in one month."""

from __future__ import annotations

from typing import Any, Self

from pydantic import ConfigDict, Field, model_validator

from schemas.api.common import ApiModel, UtcDateTime
from schemas.market import ProcessKind, YearMonth

_HOURS: dict[str, Any] = {"capacity_hours": 640.0, "reserved_hours": 120.0, "price_per_hour": 85.0}
_LISTING_EXAMPLE: dict[str, Any] = {
    "id": "lst_01JD8QB1C2D3E4F5G6H7J8K9M0",
    "site_id": "site_01JD8Q9V2B3C4D5E6F7G8H9J0K",
    "cdmo_id": "org_01JD8Q4T5M6N7P8Q9R0S1T2V3W",
    "process": "cleanroom_assembly",
    "month": "2027-03",
    **_HOURS,
    "free_hours": 520.0,
    "version": 7,
    "created_at": "2026-11-02T10:00:00Z",
    "updated_at": "2026-11-21T08:15:00Z",
}


def _check_reserved(capacity: float | None, reserved: float | None) -> None:
    if capacity is not None and reserved is not None and reserved > capacity:
        raise ValueError("reserved_hours exceeds capacity_hours")


class ListingValues(ApiModel):
    """The mutable part of a listing; PUT replaces all of it."""

    model_config = ConfigDict(json_schema_extra={"examples": [_HOURS]})

    capacity_hours: float = Field(ge=0, le=1e7, description="Total hours offered in the month.")
    reserved_hours: float = Field(
        default=0, ge=0, le=1e7, description="Hours already taken by accepted deals."
    )
    price_per_hour: float = Field(ge=0, le=1e6, description="Price per hour of capacity.")

    @model_validator(mode="after")
    def _reserved_within_capacity(self) -> Self:
        _check_reserved(self.capacity_hours, self.reserved_hours)
        return self


class ListingCreate(ListingValues):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"process": "cleanroom_assembly", "month": "2027-03", **_HOURS}]
        }
    )

    process: ProcessKind
    month: YearMonth


class ListingUpdate(ApiModel):
    """Partial update of a listing's values (PATCH)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"capacity_hours": 600.0}]})

    capacity_hours: float | None = Field(default=None, ge=0, le=1e7)
    reserved_hours: float | None = Field(default=None, ge=0, le=1e7)
    price_per_hour: float | None = Field(default=None, ge=0, le=1e6)


class ListingPublic(ListingValues):
    model_config = ConfigDict(json_schema_extra={"examples": [_LISTING_EXAMPLE]})

    id: str
    site_id: str
    cdmo_id: str
    process: ProcessKind
    month: YearMonth
    free_hours: float
    version: int = Field(description="Bumped on every change; the ETag of the listing.")
    created_at: UtcDateTime
    updated_at: UtcDateTime
