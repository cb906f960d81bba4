"""Request bodies of the load tests (plain JSON: the load tests talk HTTP only)."""

from __future__ import annotations

import random
from typing import Any

PROCESSES = ["catheter_assembly", "eo_sterilisation", "final_test"]
MONTHS = [f"2027-{m:02d}" for m in range(1, 13)]


def site_body(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "country": "CN",
        "region": "CN",
        "certifications": [
            {
                "kind": "iso_13485",
                "issuer": "TUV SUD",
                "device_classes": ["II", "III"],
                "valid_from": "2025-01-01",
                "valid_until": "2029-12-31",
            }
        ],
        "processes": PROCESSES,
        "categories": ["implantable_interventional"],
        "device_classes": ["II", "III"],
        "quality": {"inspection_findings": 1, "on_time_rate": 0.97},
    }


def listing_body(process: str, month: str) -> dict[str, Any]:
    return {
        "process": process,
        "month": month,
        "capacity_hours": random.choice([400, 600, 800]),
        "reserved_hours": 0,
        "price_per_hour": round(random.uniform(40, 140), 2),
    }


def project_body() -> dict[str, Any]:
    start = random.randint(1, 9)
    months = random.randint(1, 3)
    return {
        "title": f"Balloon catheter {random.randint(1, 10**6)}",
        "category": "implantable_interventional",
        "device_class": random.choice(["II", "III"]),
        "target_markets": random.sample(["CN", "EU", "US", "SEA"], k=random.randint(1, 2)),
        "required_certifications": ["iso_13485"],
        "window_start": f"2027-{start:02d}",
        "window_end": f"2027-{start + months - 1:02d}",
        "loads": [
            {
                "process": "catheter_assembly",
                "monthly_hours": [random.randint(50, 200) for _ in range(months)],
            }
        ],
        "stage": random.choice(["pilot", "commercial"]),
        "priority": random.randint(1, 10),
        "budget_ceiling": random.randint(50, 500) * 1000,
        "status": "open",
    }


def run_body() -> dict[str, Any]:
    """A match run over the whole market (the match-runs API, see briefs/runs_api.md)."""
    return {"scope": {}, "params": {"time_limit_s": 5}, "dry_run": random.random() < 0.5}
