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
import random
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, select

from schemas.api import OrganisationCreate, OrgKind, ProjectCreate, SiteCreate
from schemas.market import month_index, month_name
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


ORGS = [
    DemoOrg(OPERATOR, "CDMO Market Operations (demo)", OrgKind.OPERATOR, None),
    DemoOrg("org_demo_maker_neurovista", "Hangzhou NeuroVista Medical", OrgKind.MAKER, "CN"),
    DemoOrg("org_demo_maker_cardiolink", "Shenzhen Cardiolink Devices", OrgKind.MAKER, "CN"),
    DemoOrg("org_demo_maker_orthotech", "Boston Orthotech Inc.", OrgKind.MAKER, "US"),
    DemoOrg("org_demo_cdmo_suzhou", "Suzhou Precision Medical CDMO", OrgKind.CDMO, "CN"),
    DemoOrg("org_demo_cdmo_meditron", "Shenzhen Meditron Manufacturing", OrgKind.CDMO, "CN"),
    DemoOrg("org_demo_cdmo_wuxi", "Wuxi BioDevice Contract Manufacturing", OrgKind.CDMO, "CN"),
    DemoOrg("org_demo_cdmo_eindhoven", "Eindhoven MedTech Partners", OrgKind.CDMO, "NL"),
    DemoOrg("org_demo_cdmo_twincities", "Twin Cities Contract Medical", OrgKind.CDMO, "US"),
]


def _cert(kind: str, issuer: str, start: dt.date, months: int, classes: str = "I,II,III"):  # type: ignore[no-untyped-def]
    end_index = month_index(start.strftime("%Y-%m")) + months
    end = dt.date(end_index // 12, end_index % 12 + 1, 1) - dt.timedelta(days=1)
    return {
        "kind": kind,
        "issuer": issuer,
        "device_classes": classes.split(","),
        "valid_from": start.isoformat(),
        "valid_until": end.isoformat(),
    }


def _sites(today: dt.date) -> list[tuple[str, str, dict[str, Any], dict[str, float]]]:
    """(site id, cdmo id, site body, {process: base monthly hours}) for every demo site."""
    past = today.replace(day=1) - dt.timedelta(days=400)
    recent = today.replace(day=1) - dt.timedelta(days=90)
    return [
        (
            "site_demo_suzhou_sip",
            "org_demo_cdmo_suzhou",
            {
                "name": "Suzhou Industrial Park plant",
                "country": "CN",
                "region": "CN",
                "overseas": False,
                "certifications": [
                    _cert("iso_13485", "TUV SUD", past, 36),
                    _cert("nmpa_licence", "Jiangsu MPA", past, 60, "II,III"),
                    _cert("cleanroom_iso7", "SGS", past, 24),
                    _cert("sterilisation_eo", "SGS", recent, 24),
                ],
                "processes": [
                    "precision_machining",
                    "catheter_assembly",
                    "cleanroom_assembly",
                    "eo_sterilisation",
                    "final_test",
                ],
                "categories": ["implantable_interventional", "surgical_systems", "consumables"],
                "device_classes": ["II", "III"],
                "quality": {"inspection_findings": 1, "on_time_rate": 0.97, "lead_time_weeks": 4},
            },
            {
                "precision_machining": 900,
                "catheter_assembly": 700,
                "cleanroom_assembly": 800,
                "eo_sterilisation": 300,
                "final_test": 400,
            },
        ),
        (
            "site_demo_suzhou_budapest",
            "org_demo_cdmo_suzhou",
            {
                "name": "Budapest assembly centre",
                "country": "HU",
                "region": "EU",
                "overseas": True,
                "certifications": [
                    _cert("iso_13485", "TUV SUD", past, 36),
                    _cert("eu_mdr", "BSI (NB 2797)", recent, 30, "II,III"),
                    _cert("cleanroom_iso7", "SGS", recent, 24),
                ],
                "processes": ["catheter_assembly", "cleanroom_assembly", "final_test"],
                "categories": ["implantable_interventional", "consumables"],
                "device_classes": ["II", "III"],
                "quality": {"inspection_findings": 2, "on_time_rate": 0.95, "lead_time_weeks": 6},
            },
            {"catheter_assembly": 350, "cleanroom_assembly": 420, "final_test": 200},
        ),
        (
            "site_demo_suzhou_penang",
            "org_demo_cdmo_suzhou",
            {
                "name": "Penang moulding and sterilisation",
                "country": "MY",
                "region": "SEA",
                "overseas": True,
                "certifications": [
                    _cert("iso_13485", "BSI", past, 36),
                    _cert("mdsap", "BSI", recent, 36),
                    _cert("sterilisation_gamma", "Steris", recent, 24),
                    # expires within the year: projects running past it cannot use it
                    _cert("fda_registration", "US FDA", past, 18),
                ],
                "processes": [
                    "injection_moulding",
                    "extrusion",
                    "gamma_sterilisation",
                    "final_test",
                ],
                "categories": ["consumables", "ivd"],
                "device_classes": ["I", "II"],
                "quality": {"inspection_findings": 0, "on_time_rate": 0.98, "lead_time_weeks": 5},
            },
            {
                "injection_moulding": 1200,
                "extrusion": 600,
                "gamma_sterilisation": 500,
                "final_test": 300,
            },
        ),
        (
            "site_demo_meditron_shenzhen",
            "org_demo_cdmo_meditron",
            {
                "name": "Shenzhen Guangming electronics plant",
                "country": "CN",
                "region": "CN",
                "overseas": False,
                "certifications": [
                    _cert("iso_13485", "TUV Rheinland", past, 36),
                    _cert("nmpa_licence", "Guangdong MPA", past, 60),
                    _cert("iec_62304", "TUV Rheinland", recent, 36),
                ],
                "processes": [
                    "pcb_assembly",
                    "precision_machining",
                    "software_verification",
                    "final_test",
                ],
                "categories": ["medical_imaging", "ai_samd", "rehabilitation", "surgical_systems"],
                "device_classes": ["I", "II", "III"],
                "quality": {"inspection_findings": 3, "on_time_rate": 0.92, "lead_time_weeks": 3},
            },
            {
                "pcb_assembly": 1500,
                "precision_machining": 700,
                "software_verification": 400,
                "final_test": 500,
            },
        ),
        (
            "site_demo_meditron_irvine",
            "org_demo_cdmo_meditron",
            {
                "name": "Irvine final assembly and release",
                "country": "US",
                "region": "US",
                "overseas": True,
                "certifications": [
                    _cert("iso_13485", "BSI", recent, 36),
                    _cert("fda_registration", "US FDA", recent, 24),
                    _cert("mdsap", "BSI", recent, 36),
                    _cert("iec_62304", "UL", recent, 36),
                ],
                "processes": ["pcb_assembly", "software_verification", "final_test"],
                "categories": ["medical_imaging", "ai_samd", "surgical_systems"],
                "device_classes": ["I", "II", "III"],
                "quality": {"inspection_findings": 1, "on_time_rate": 0.94, "lead_time_weeks": 6},
            },
            {"pcb_assembly": 300, "software_verification": 250, "final_test": 250},
        ),
        (
            "site_demo_wuxi_huishan",
            "org_demo_cdmo_wuxi",
            {
                "name": "Wuxi Huishan IVD campus",
                "country": "CN",
                "region": "CN",
                "overseas": False,
                "certifications": [
                    _cert("iso_13485", "SGS", past, 36),
                    _cert("nmpa_licence", "Jiangsu MPA", past, 60, "I,II"),
                    _cert("cleanroom_iso8", "SGS", recent, 24),
                ],
                "processes": ["injection_moulding", "cleanroom_assembly", "final_test"],
                "categories": ["ivd", "consumables"],
                "device_classes": ["I", "II"],
                "quality": {"inspection_findings": 2, "on_time_rate": 0.93, "lead_time_weeks": 3},
            },
            {"injection_moulding": 1600, "cleanroom_assembly": 900, "final_test": 400},
        ),
        (
            "site_demo_wuxi_bacninh",
            "org_demo_cdmo_wuxi",
            {
                "name": "Bac Ninh consumables plant",
                "country": "VN",
                "region": "SEA",
                "overseas": True,
                "certifications": [
                    _cert("iso_13485", "SGS", recent, 36),
                    _cert("cleanroom_iso8", "SGS", recent, 24),
                    _cert("sterilisation_eo", "SGS", recent, 24),
                ],
                "processes": ["injection_moulding", "extrusion", "eo_sterilisation"],
                "categories": ["consumables"],
                "device_classes": ["I", "II"],
                "quality": {"inspection_findings": 4, "on_time_rate": 0.90, "lead_time_weeks": 7},
            },
            {"injection_moulding": 1000, "extrusion": 700, "eo_sterilisation": 350},
        ),
        (
            "site_demo_eindhoven",
            "org_demo_cdmo_eindhoven",
            {
                "name": "Eindhoven high-tech campus",
                "country": "NL",
                "region": "EU",
                "overseas": False,
                "certifications": [
                    _cert("iso_13485", "DEKRA", past, 36),
                    _cert("eu_mdr", "DEKRA (NB 0344)", past, 48),
                    _cert("iec_62304", "DEKRA", recent, 36),
                    _cert("cleanroom_iso7", "DEKRA", recent, 24),
                ],
                "processes": [
                    "precision_machining",
                    "pcb_assembly",
                    "cleanroom_assembly",
                    "software_verification",
                    "final_test",
                ],
                "categories": [
                    "medical_imaging",
                    "radiotherapy",
                    "surgical_systems",
                    "future_innovative",
                ],
                "device_classes": ["II", "III"],
                "quality": {"inspection_findings": 0, "on_time_rate": 0.96, "lead_time_weeks": 8},
            },
            {
                "precision_machining": 500,
                "pcb_assembly": 400,
                "cleanroom_assembly": 300,
                "software_verification": 300,
                "final_test": 250,
            },
        ),
        (
            "site_demo_twincities",
            "org_demo_cdmo_twincities",
            {
                "name": "Minneapolis implant centre",
                "country": "US",
                "region": "US",
                "overseas": False,
                "certifications": [
                    _cert("iso_13485", "BSI", past, 36),
                    _cert("fda_registration", "US FDA", past, 48),
                    _cert("cleanroom_iso7", "UL", recent, 24),
                    _cert("sterilisation_eo", "Steris", recent, 24),
                ],
                "processes": [
                    "precision_machining",
                    "catheter_assembly",
                    "cleanroom_assembly",
                    "eo_sterilisation",
                    "final_test",
                ],
                "categories": ["implantable_interventional", "surgical_systems"],
                "device_classes": ["II", "III"],
                "quality": {"inspection_findings": 1, "on_time_rate": 0.97, "lead_time_weeks": 6},
            },
            {
                "precision_machining": 450,
                "catheter_assembly": 400,
                "cleanroom_assembly": 350,
                "eo_sterilisation": 200,
                "final_test": 200,
            },
        ),
    ]


def _ramp(months: int, start: float, end: float) -> list[float]:
    if months == 1:
        return [start]
    return [round(start + (end - start) * i / (months - 1), 1) for i in range(months)]


def _projects(first_month: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(project id, maker id, body); windows start 1-4 months from now."""

    def window(offset: int, months: int) -> dict[str, str]:
        return {
            "window_start": month_name(first_month + offset),
            "window_end": month_name(first_month + offset + months - 1),
        }

    nv, cl, ot = (
        "org_demo_maker_neurovista",
        "org_demo_maker_cardiolink",
        "org_demo_maker_orthotech",
    )
    return [
        (
            "prj_demo_dcb_catheter",
            cl,
            {
                "title": "Drug-coated balloon catheter, EU pilot",
                "category": "implantable_interventional",
                "device_class": "III",
                "target_markets": ["CN", "EU"],
                "required_certifications": ["iso_13485", "cleanroom_iso7"],
                **window(2, 6),
                "loads": [
                    {"process": "catheter_assembly", "monthly_hours": _ramp(6, 80, 220)},
                    {"process": "eo_sterilisation", "monthly_hours": _ramp(6, 10, 40)},
                ],
                "stage": "pilot",
                "priority": 9,
                "budget_ceiling": 600000,
                "excluded_cdmo_ids": ["org_demo_cdmo_twincities"],
            },
        ),
        (
            "prj_demo_ivd_cartridge",
            nv,
            {
                "title": "Multiplex PCR cartridge, commercial ramp",
                "category": "ivd",
                "device_class": "II",
                "target_markets": ["CN", "SEA"],
                "required_certifications": ["iso_13485"],
                **window(1, 8),
                "loads": [
                    {"process": "injection_moulding", "monthly_hours": _ramp(8, 300, 900)},
                    {"process": "cleanroom_assembly", "monthly_hours": _ramp(8, 120, 400)},
                ],
                "stage": "commercial",
                "priority": 7,
                "budget_ceiling": 2500000,
                "second_source_required": True,
                "second_source_share": 0.3,
            },
        ),
        (
            "prj_demo_ai_ecg",
            nv,
            {
                "title": "AI ECG triage software, FDA 510(k) build",
                "category": "ai_samd",
                "device_class": "II",
                "target_markets": ["US"],
                "required_certifications": ["iso_13485", "iec_62304"],
                **window(1, 4),
                "loads": [
                    {"process": "software_verification", "monthly_hours": [160, 200, 200, 120]},
                    {"process": "pcb_assembly", "monthly_hours": [40, 60, 60, 40]},
                ],
                "stage": "development",
                "priority": 8,
                "budget_ceiling": 300000,
            },
        ),
        (
            "prj_demo_ct_gantry",
            nv,
            {
                "title": "Photon-counting CT detector module",
                "category": "medical_imaging",
                "device_class": "III",
                "target_markets": ["CN", "EU"],
                "required_certifications": ["iso_13485"],
                **window(3, 6),
                "loads": [
                    {"process": "pcb_assembly", "monthly_hours": _ramp(6, 200, 350)},
                    {"process": "precision_machining", "monthly_hours": _ramp(6, 120, 200)},
                    {"process": "final_test", "monthly_hours": _ramp(6, 40, 90)},
                ],
                "stage": "pilot",
                "priority": 6,
                "budget_ceiling": 1200000,
            },
        ),
        (
            "prj_demo_knee_implant",
            ot,
            {
                "title": "Cementless knee tibial tray",
                "category": "implantable_interventional",
                "device_class": "III",
                "target_markets": ["US"],
                "required_certifications": ["iso_13485", "sterilisation_eo"],
                **window(2, 6),
                "loads": [
                    {"process": "precision_machining", "monthly_hours": _ramp(6, 150, 300)},
                    {"process": "eo_sterilisation", "monthly_hours": _ramp(6, 20, 50)},
                ],
                "stage": "commercial",
                "priority": 8,
                "budget_ceiling": 900000,
                "confidential": True,
            },
        ),
        (
            "prj_demo_surgical_robot",
            ot,
            {
                "title": "Laparoscopic robot instrument arm",
                "category": "surgical_systems",
                "device_class": "II",
                "target_markets": ["US", "EU"],
                "required_certifications": ["iso_13485"],
                **window(3, 5),
                "loads": [
                    {"process": "precision_machining", "monthly_hours": _ramp(5, 100, 180)},
                    {"process": "pcb_assembly", "monthly_hours": _ramp(5, 60, 100)},
                    {"process": "final_test", "monthly_hours": _ramp(5, 30, 60)},
                ],
                "stage": "pilot",
                "priority": 7,
                "budget_ceiling": 700000,
            },
        ),
        (
            "prj_demo_syringe",
            cl,
            {
                "title": "Prefilled saline syringe",
                "category": "consumables",
                "device_class": "II",
                "target_markets": ["CN", "SEA"],
                "required_certifications": ["iso_13485"],
                **window(1, 10),
                "loads": [
                    {"process": "injection_moulding", "monthly_hours": _ramp(10, 400, 600)},
                    {"process": "eo_sterilisation", "monthly_hours": _ramp(10, 60, 90)},
                ],
                "stage": "commercial",
                "priority": 4,
                "budget_ceiling": 1500000,
                "confidential": False,
            },
        ),
        (
            "prj_demo_rehab_exo",
            nv,
            {
                "title": "Lower-limb rehabilitation exoskeleton",
                "category": "rehabilitation",
                "device_class": "II",
                "target_markets": ["CN"],
                "required_certifications": ["iso_13485", "nmpa_licence"],
                **window(2, 5),
                "loads": [
                    {"process": "pcb_assembly", "monthly_hours": _ramp(5, 80, 160)},
                    {"process": "precision_machining", "monthly_hours": _ramp(5, 60, 120)},
                    {"process": "final_test", "monthly_hours": _ramp(5, 20, 40)},
                ],
                "stage": "pilot",
                "priority": 5,
                "budget_ceiling": 400000,
            },
        ),
        (
            "prj_demo_radiotherapy_mlc",
            ot,
            {
                "title": "Multi-leaf collimator leaves",
                "category": "radiotherapy",
                "device_class": "III",
                "target_markets": ["EU", "US"],
                "required_certifications": ["iso_13485"],
                **window(4, 4),
                "loads": [
                    {"process": "precision_machining", "monthly_hours": [120, 160, 160, 100]}
                ],
                "stage": "development",
                "priority": 6,
                "budget_ceiling": 250000,
            },
        ),
        (
            "prj_demo_stent_delivery",
            cl,
            {
                "title": "Peripheral stent delivery system",
                "category": "implantable_interventional",
                "device_class": "III",
                "target_markets": ["CN"],
                "required_certifications": ["iso_13485", "nmpa_licence", "sterilisation_eo"],
                **window(1, 6),
                "loads": [
                    {"process": "catheter_assembly", "monthly_hours": _ramp(6, 100, 250)},
                    {"process": "extrusion", "monthly_hours": _ramp(6, 40, 80)},
                    {"process": "eo_sterilisation", "monthly_hours": _ramp(6, 15, 35)},
                ],
                "stage": "commercial",
                "priority": 7,
                "budget_ceiling": 800000,
            },
        ),
        (
            "prj_demo_glucose_patch",
            cl,
            {
                "title": "Continuous glucose monitor patch (draft)",
                "category": "future_innovative",
                "device_class": "II",
                "target_markets": ["CN", "EU"],
                "required_certifications": ["iso_13485"],
                **window(4, 6),
                "loads": [
                    {"process": "pcb_assembly", "monthly_hours": _ramp(6, 100, 300)},
                    {"process": "cleanroom_assembly", "monthly_hours": _ramp(6, 80, 200)},
                ],
                "stage": "development",
                "priority": 5,
                "status": "draft",
            },
        ),
        (
            "prj_demo_ultrasound_probe",
            nv,
            {
                "title": "Handheld ultrasound probe",
                "category": "medical_imaging",
                "device_class": "II",
                "target_markets": ["SEA", "OTHER"],
                "required_certifications": ["iso_13485"],
                **window(2, 6),
                "loads": [
                    {"process": "pcb_assembly", "monthly_hours": _ramp(6, 150, 250)},
                    {"process": "final_test", "monthly_hours": _ramp(6, 40, 60)},
                ],
                "stage": "commercial",
                "priority": 5,
                "budget_ceiling": 500000,
                "confidential": False,
            },
        ),
    ]


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
        sites = _sites(today)
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
            bump_market_version(session)
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
