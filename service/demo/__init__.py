"""A small, hand-made but realistic demo marketplace, loaded idempotently by
``cdmo serve --demo``. All companies are fictional.

Three makers, five CDMOs (three Chinese with overseas sites in the EU, the US and South-East
Asia; one Dutch, one American), certificates with real expiry dates (some run out within the
year), listings for the next 12 months, and a dozen projects across the policy categories.
Demo API keys are derived from the HMAC secret, so they are stable across restarts and
printed every time; ``--demo`` is refused in production.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from schemas.api import OrganisationCreate, OrgKind, ProjectCreate, SiteCreate
from schemas.market import month_index, month_name, month_start
from service import repositories as repo
from service.auth import Principal
from service.db import Database, bump_market_version
from service.models import ApiKey, Listing, Organisation, Project, Site
from service.security import derived_key, display_prefix, hash_api_key

OPERATOR = "org_demo_operator"


@dataclass(frozen=True)
class DemoOrg:
    id: str
    name: str
    kind: OrgKind
    country: str | None


MARKET_FILE = Path(__file__).with_name("market.json")


def _market() -> dict[str, Any]:
    """The demo market as data: organisations, sites (certificates dated relative to the
    current month), base monthly capacity per process, and projects (windows relative to it)."""
    data: dict[str, Any] = json.loads(MARKET_FILE.read_text())
    return data


ORGS = [
    DemoOrg(o["id"], o["name"], OrgKind(o["kind"]), o["country"])
    for o in _market()["organisations"]
]


def _cert(cert: dict[str, Any], this_month: int) -> dict[str, Any]:
    start = this_month + int(cert["from_month"])
    end = start + int(cert["months"])
    return {
        "kind": cert["kind"],
        "issuer": cert["issuer"],
        "device_classes": cert["classes"],
        "valid_from": month_start(month_name(start)).isoformat(),
        "valid_until": (month_start(month_name(end)) - dt.timedelta(days=1)).isoformat(),
    }


def _sites(this_month: int) -> list[tuple[str, str, dict[str, Any], dict[str, float]]]:
    """(site id, cdmo id, site body, {process: base monthly hours}) for every demo site."""
    out = []
    for site in _market()["sites"]:
        body = {
            k: v
            for k, v in site.items()
            if k not in ("id", "cdmo_id", "monthly_capacity_hours", "certifications")
        }
        body["certifications"] = [_cert(c, this_month) for c in site["certifications"]]
        out.append((site["id"], site["cdmo_id"], body, site["monthly_capacity_hours"]))
    return out


def _projects(this_month: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(project id, maker id, body); windows relative to the current month."""
    out = []
    for project in _market()["projects"]:
        body = {
            k: v
            for k, v in project.items()
            if k not in ("id", "maker_id", "start_offset", "months")
        }
        first = this_month + int(project["start_offset"])
        body["window_start"] = month_name(first)
        body["window_end"] = month_name(first + int(project["months"]) - 1)
        out.append((project["id"], project["maker_id"], body))
    return out


def _ensure_key(session: Session, org: DemoOrg, secret: str) -> str:
    key = derived_key(secret, org.id)
    key_id = f"key_demo_{org.id.removeprefix('org_demo_')}"
    row = session.get(ApiKey, key_id)
    if row is None:
        session.add(
            ApiKey(
                id=key_id,
                org_id=org.id,
                label="demo",
                prefix=display_prefix(key),
                key_hash=hash_api_key(key, secret),
            )
        )
    elif row.key_hash != hash_api_key(key, secret) or row.revoked_at is not None:
        row.key_hash, row.prefix, row.revoked_at = (
            hash_api_key(key, secret),
            display_prefix(key),
            None,
        )
        session.add(row)
    return key


def load_demo(db: Database, *, secret: str, today: dt.date | None = None) -> dict[str, str]:
    """Create whatever part of the demo marketplace is missing; return {org name: API key}."""
    today = today or dt.datetime.now(dt.UTC).date()
    operator = Principal(org_id=OPERATOR, kind=OrgKind.OPERATOR, key_id="demo")
    keys: dict[str, str] = {}
    with db.session() as session:
        for org in ORGS:
            if session.get(Organisation, org.id) is None:
                repo.orgs.create_org(
                    session=session,
                    org_id=org.id,
                    org_in=OrganisationCreate(name=org.name, kind=org.kind, country=org.country),
                )
            keys[f"{org.kind.value:8} {org.name}"] = _ensure_key(session, org, secret)
        session.commit()

        this_month = month_index(today.strftime("%Y-%m"))
        sites = _sites(this_month)
        for site_id, cdmo_id, body, _ in sites:
            if session.get(Site, site_id) is None:
                repo.sites.create_site(
                    session=session,
                    principal=operator,
                    site_id=site_id,
                    site_in=SiteCreate(cdmo_id=cdmo_id, **body),
                )
        existing = {
            (s, p, m)
            for s, p, m in session.exec(
                select(Listing.site_id, Listing.process, Listing.month).where(
                    Listing.site_id.in_([s[0] for s in sites])  # type: ignore[attr-defined]
                )
            ).all()
        }
        added = 0
        for site_id, _cdmo, _body, base in sites:
            rng = random.Random(site_id)  # the same demo numbers on every machine
            for process, hours in base.items():
                for offset in range(12):
                    month = month_name(this_month + offset)
                    if (site_id, process, month) in existing:
                        continue
                    capacity = round(hours * rng.uniform(0.8, 1.2))
                    session.add(
                        Listing(
                            id=f"lst_demo_{site_id.removeprefix('site_demo_')}_{process}_{month}",
                            site_id=site_id,
                            process=process,
                            month=month,
                            capacity_hours=capacity,
                            reserved_hours=round(capacity * rng.choice([0, 0, 0.1, 0.25, 0.4])),
                            price_per_hour=round(rng.uniform(40, 140), 2),
                        )
                    )
                    added += 1
        if added:
            bump_market_version(session, supply=True)
            session.commit()

        for project_id, maker_id, body in _projects(this_month):
            if session.get(Project, project_id) is None:
                repo.projects.create_project(
                    session=session,
                    principal=operator,
                    project_id=project_id,
                    project_in=ProjectCreate(maker_id=maker_id, **body),
                )
        session.commit()
    return keys
