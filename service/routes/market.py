"""The market snapshot the matcher consumes (operators only)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from schemas.api import MarketVersion
from schemas.market import MarketSnapshot
from service import repositories as repo
from service.deps import OperatorOrg, ServicesDep, SessionDep
from service.openapi import problems

router = APIRouter(prefix="/v1/market", tags=["market"])

SNAPSHOT_EXAMPLE: dict[str, Any] = {
    "version": 1842,
    "as_of": "2026-11-22",
    "sites": [
        {
            "id": "site_01JD8Q9V2B3C4D5E6F7G8H9J0K",
            "cdmo_id": "org_01JD8Q4T5M6N7P8Q9R0S1T2V3W",
            "name": "Budapest assembly centre",
            "country": "HU",
            "region": "EU",
            "overseas": True,
            "certifications": [
                {
                    "kind": "eu_mdr",
                    "issuer": "BSI (NB 2797)",
                    "device_classes": ["II", "III"],
                    "valid_from": "2025-06-01",
                    "valid_until": "2027-05-31",
                }
            ],
            "processes": ["catheter_assembly"],
            "categories": ["implantable_interventional"],
            "device_classes": ["II", "III"],
            "quality": {"inspection_findings": 2, "on_time_rate": 0.96, "lead_time_weeks": 6},
        }
    ],
    "listings": [
        {
            "site_id": "site_01JD8Q9V2B3C4D5E6F7G8H9J0K",
            "process": "catheter_assembly",
            "month": "2027-01",
            "capacity_hours": 640.0,
            "reserved_hours": 120.0,
            "price_per_hour": 85.0,
        }
    ],
    "projects": [
        {
            "id": "prj_01JD8QD4E5F6G7H8J9K0M1N2P3",
            "maker_id": "org_01JD8QE5F6G7H8J9K0M1N2P3Q4",
            "title": "Drug-coated balloon catheter",
            "category": "implantable_interventional",
            "device_class": "III",
            "target_markets": ["EU"],
            "required_certifications": ["eu_mdr"],
            "loads": [{"process": "catheter_assembly", "monthly_hours": [120.0]}],
            "window_start": "2027-01",
            "window_end": "2027-01",
            "stage": "pilot",
            "priority": 8,
            "budget_ceiling": 250000.0,
            "excluded_cdmo_ids": [],
            "second_source_required": False,
            "second_source_share": 0.3,
            "confidential": True,
        }
    ],
    "previous": [
        {
            "project_id": "prj_01JD8QD4E5F6G7H8J9K0M1N2P3",
            "site_id": "site_01JD8Q9V2B3C4D5E6F7G8H9J0K",
            "second_site_id": None,
        }
    ],
    "pinned": [],
}


@router.get(
    "/snapshot",
    summary="All open and proposed projects and all listings, at one market version",
    description="Read in one REPEATABLE READ transaction (one SQLite read transaction), so "
    "every row is as of `version`. Validated by `schemas.market.MarketSnapshot`; its JSON "
    "Schema is `schemas/market_snapshot.schema.json`.",
    response_model=MarketSnapshot,
    responses={
        200: {"content": {"application/json": {"example": SNAPSHOT_EXAMPLE}}},
        **problems(403, 422),
    },
)
def snapshot(
    _op: OperatorOrg,
    services: ServicesDep,
    _slot: SessionDep,  # holds a request slot; the snapshot reads in its own session
    response: Response,
    as_of: Annotated[
        dt.date | None,
        Query(description="Date the matcher checks certificates against; default today (UTC)."),
    ] = None,
) -> MarketSnapshot:
    snap = repo.market.read_snapshot(db=services.db, as_of=as_of or dt.datetime.now(dt.UTC).date())
    services.metrics.market_version.set(snap.version)
    response.headers["ETag"] = f'"{snap.version}"'
    return snap


@router.get("/version", summary="The current market version", responses=problems(403))
def version(_op: OperatorOrg, session: SessionDep) -> MarketVersion:
    return MarketVersion(version=repo.market.market_version(session=session))
