"""Factories for matcher tests: random kernel arrays and small hand-made market snapshots."""

from __future__ import annotations

import datetime as dt

import numpy as np

from matcher.kernels import MKT_SHIFT, N_CLASSES, PROC_SHIFT, RowArrays, SiteArrays
from schemas.market import (
    CapacityListing,
    Certification,
    CertificationKind,
    DeviceCategory,
    MarketSnapshot,
    ProcessKind,
    ProcessLoad,
    Project,
    Proposal,
    QualityRecord,
    Region,
    RegulatoryClass,
    SecondSourceSeparation,
    Site,
)

# --------------------------------------------------------------------------- kernel arrays


def random_arrays(
    rng: np.random.Generator,
    n_rows: int,
    n_sites: int,
    *,
    months: int = 3,
    n_groups: int = 4,
    n_cdmo: int = 3,
    ties: bool = True,
) -> tuple[SiteArrays, RowArrays]:
    """Random but well-formed arrays; small value sets make ties and all rules frequent."""
    pt = 10 * months
    n_cert = rng.integers(0, 4, n_sites)
    cert_ptr = np.zeros(n_sites + 1, dtype=np.int64)
    np.cumsum(n_cert, out=cert_ptr[1:])
    nc = int(cert_ptr[-1])
    region = rng.integers(0, 5, n_sites)
    # Each site serves a random half of the category x class bits used by the groups.
    cc_bits = rng.integers(0, 4 * N_CLASSES, n_groups)
    cc = np.zeros(n_sites, dtype=np.uint32)
    for c in np.unique(cc_bits):
        cc |= np.where(rng.random(n_sites) < 0.7, np.uint32(1) << np.uint32(c), 0).astype(np.uint32)
    procs = rng.integers(0, 4, n_sites)  # processes 0-1 mostly
    word0 = ((procs.astype(np.int64) | 0b100) << PROC_SHIFT) | (np.int64(1) << (MKT_SHIFT + region))
    fit_choices = np.array([0.0, 0.25, 0.5]) if ties else rng.random(8)
    sites = SiteArrays(
        cc=cc,
        cdmo=rng.integers(0, n_cdmo, n_sites).astype(np.int32),
        region_bit=(np.int64(1) << region).astype(np.uint32),
        word0=word0.astype(np.uint32),
        fitq=rng.choice(fit_choices, n_sites),
        free=rng.integers(0, 6, (n_sites, pt)).astype(np.int32),
        price=rng.choice(np.array([0.0, 1.0, 2.0, 0.5]), (n_sites, pt)),
        cert_ptr=cert_ptr,
        cert_kind=rng.integers(0, 4, nc).astype(np.int32),
        cert_cls=rng.integers(0, 8, nc).astype(np.uint32),
        cert_first=rng.integers(-1, months + 1, nc).clip(0, months).astype(np.int32),
        cert_last=rng.integers(-1, months + 1, nc).clip(-1, months - 1).astype(np.int32),
        access_region=np.array([-1, 0, 1, 2] + [-1] * 6, dtype=np.int32),
    )
    m0 = rng.integers(0, months, n_groups)
    m1 = np.minimum(m0 + rng.integers(0, months, n_groups), months - 1)
    n_ex = rng.integers(0, 3, n_rows) * (rng.random(n_rows) < 0.3)
    excl_ptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(n_ex, out=excl_ptr[1:])
    req = (
        (rng.integers(0, 4, n_rows) << PROC_SHIFT)
        | rng.integers(0, 4, n_rows) * (rng.random(n_rows) < 0.5)
        | ((rng.integers(0, 8, n_rows) * (rng.random(n_rows) < 0.3)) << MKT_SHIFT)
    )
    group = rng.integers(0, n_groups, n_rows)
    # Loads lie inside the row's window and on its required processes (as encode builds them).
    offs: list[np.ndarray] = []
    for r in range(n_rows):
        procs = [p for p in range(10) if (req[r] >> PROC_SHIFT) >> p & 1]
        cells = [p * months + m for p in procs for m in range(m0[group[r]], m1[group[r]] + 1)]
        n = int(rng.integers(0, min(4, len(cells)) + 1)) if cells else 0
        offs.append(np.sort(rng.choice(cells, n, replace=False)) if n else np.zeros(0, int))
    ent_ptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum([len(o) for o in offs], out=ent_ptr[1:])
    ne = int(ent_ptr[-1])
    hours = rng.integers(0, 4, ne).astype(np.float64) * rng.choice([1.0, 0.5], ne)
    a_choices = np.array([0.0, 10.0, 20.0]) if ties else rng.random(8) * 50
    a = rng.choice(a_choices, n_rows)
    force = np.where(
        rng.random((n_rows, 2)) < 0.3, rng.integers(0, max(n_sites, 1), (n_rows, 2)), -1
    )
    rows = RowArrays(
        group=group.astype(np.int32),
        req=req.astype(np.uint32),
        tmask=(np.int64(1) << rng.integers(0, 5, n_rows)).astype(np.uint32),
        excl_ptr=excl_ptr,
        excl=rng.integers(0, n_cdmo, int(excl_ptr[-1])).astype(np.int32),
        ent_ptr=ent_ptr,
        ent_off=np.concatenate([np.zeros(0, int), *offs]).astype(np.int32),
        ent_units=np.ceil(hours).astype(np.int64),
        ent_hours=hours,
        budget=np.where(rng.random(n_rows) < 0.3, rng.integers(0, 10, n_rows), np.inf),
        a=a,
        b=a * rng.choice([0.0, 0.5, 1.0], n_rows),
        stab=rng.choice([0.0, 5.0], n_rows),
        prev=np.where(rng.random(n_rows) < 0.4, force[:, 1], -1).astype(np.int32),
        force=force.astype(np.int32),
        alt=rng.random(n_rows) < 0.5,
        grp_cc=cc_bits.astype(np.int32),
        grp_m0=m0.astype(np.int32),
        grp_m1=m1.astype(np.int32),
    )
    return sites, rows


# --------------------------------------------------------------------------- snapshots

START = "2027-01"
AS_OF = dt.date(2026, 12, 1)
PM = ProcessKind.PRECISION_MACHINING
CA = ProcessKind.CLEANROOM_ASSEMBLY
ISO = CertificationKind.ISO_13485
CDMO_ONLY = SecondSourceSeparation.CDMO  # a second source at another CDMO, any region


def cert(
    kind: CertificationKind = ISO,
    *,
    classes: tuple[RegulatoryClass, ...] = tuple(RegulatoryClass),
    valid_from: dt.date = dt.date(2020, 1, 1),
    valid_until: dt.date = dt.date(2035, 12, 31),
) -> Certification:
    return Certification(
        kind=kind, device_classes=list(classes), valid_from=valid_from, valid_until=valid_until
    )


def site(
    sid: str,
    *,
    cdmo: str | None = None,
    region: Region = Region.CN,
    country: str | None = None,
    certs: list[Certification] | None = None,
    processes: tuple[ProcessKind, ...] = (PM, CA),
    categories: tuple[DeviceCategory, ...] = (DeviceCategory.CONSUMABLES,),
    classes: tuple[RegulatoryClass, ...] = tuple(RegulatoryClass),
    on_time: float = 0.95,
) -> Site:
    return Site(
        id=sid,
        cdmo_id=cdmo or f"C-{sid}",
        country=country or {"CN": "CN", "US": "US", "EU": "DE", "SEA": "SG"}.get(region, "XX"),
        region=region,
        certifications=[cert()] if certs is None else certs,
        processes=list(processes),
        categories=list(categories),
        device_classes=list(classes),
        quality=QualityRecord(on_time_rate=on_time),
    )


def listings(
    sid: str,
    *,
    processes: tuple[ProcessKind, ...] = (PM, CA),
    months: int = 3,
    capacity: float = 100.0,
    reserved: float = 0.0,
    price: float = 10.0,
    start: str = START,
) -> list[CapacityListing]:
    y, m = (int(x) for x in start.split("-"))
    out = []
    for p in processes:
        for i in range(months):
            idx = y * 12 + m - 1 + i
            out.append(
                CapacityListing(
                    site_id=sid,
                    process=p,
                    month=f"{idx // 12:04d}-{idx % 12 + 1:02d}",
                    capacity_hours=capacity,
                    reserved_hours=reserved,
                    price_per_hour=price,
                )
            )
    return out


def project(
    pid: str,
    *,
    loads: dict[ProcessKind, list[float]] | None = None,
    start: str = START,
    category: DeviceCategory = DeviceCategory.CONSUMABLES,
    device_class: RegulatoryClass = RegulatoryClass.II,
    markets: tuple[Region, ...] = (Region.CN,),
    certs: tuple[CertificationKind, ...] = (ISO,),
    priority: int = 5,
    budget: float | None = None,
    excluded: tuple[str, ...] = (),
    second_source: bool = False,
    share: float = 0.3,
    separation: SecondSourceSeparation = SecondSourceSeparation.REGION,
) -> Project:
    loads = {PM: [10.0, 10.0, 10.0]} if loads is None else loads
    n = len(next(iter(loads.values())))
    y, m = (int(x) for x in start.split("-"))
    end = y * 12 + m - 1 + n - 1
    return Project(
        id=pid,
        maker_id="M1",
        category=category,
        device_class=device_class,
        target_markets=list(markets),
        required_certifications=list(certs),
        loads=[ProcessLoad(process=p, monthly_hours=h) for p, h in loads.items()],
        window_start=start,
        window_end=f"{end // 12:04d}-{end % 12 + 1:02d}",
        priority=priority,
        budget_ceiling=budget,
        excluded_cdmo_ids=list(excluded),
        second_source_required=second_source,
        second_source_share=share,
        second_source_separation=separation,
    )


def snapshot(
    sites: list[Site],
    projects: list[Project],
    lst: list[CapacityListing] | None = None,
    *,
    previous: list[Proposal] | None = None,
    pinned: list[Proposal] | None = None,
) -> MarketSnapshot:
    if lst is None:
        lst = [x for s in sites for x in listings(s.id)]
    return MarketSnapshot(
        version=7,
        as_of=AS_OF,
        sites=sites,
        listings=lst,
        projects=projects,
        previous=previous or [],
        pinned=pinned or [],
    )


# --------------------------------------------------------------------------- oracle
# Plain Python over the schema objects, written apart from matcher/problem.py and the kernels.


def _free(snap: MarketSnapshot) -> dict[tuple[str, str, str], CapacityListing]:
    return {(x.site_id, x.process, x.month): x for x in snap.listings}


def _months(p: Project) -> list[str]:
    y, m = (int(x) for x in p.window_start.split("-"))
    out = []
    for i in range(p.window_months):
        idx = y * 12 + m - 1 + i
        out.append(f"{idx // 12:04d}-{idx % 12 + 1:02d}")
    return out


def first_failed_rule(snap: MarketSnapshot, p: Project, s: Site, share: float = 1.0) -> str | None:
    """The first hard rule (matcher order) that rules site ``s`` out for ``p``, or None."""
    import math

    from schemas.market import MARKET_ACCESS_CERTIFICATE, month_end, month_start

    listing = _free(snap)
    months = _months(p)
    start, end = month_start(p.window_start), month_end(p.window_end)
    if p.category not in s.categories or p.device_class not in s.device_classes:
        return "category_or_class"
    for load in p.loads:
        if load.process not in s.processes:
            return "process"
        if not any((s.id, load.process, m) in listing for m in _all_months(snap)):
            return "process"

    def holds(kind: CertificationKind) -> bool:
        # Renewals: certificates of one kind and scope that follow without a gap count as one.
        for c0 in s.certifications:
            if c0.kind != kind or p.device_class not in c0.device_classes:
                continue
            same = [
                c for c in s.certifications
                if c.kind == kind and set(c.device_classes) == set(c0.device_classes)
            ]  # fmt: skip
            day = start  # first day not yet covered
            grew = True
            while grew and day <= end:
                grew = False
                for c in same:
                    if c.valid_from <= day <= c.valid_until:
                        day = c.valid_until + dt.timedelta(days=1)
                        grew = True
            if day > end:
                return True
        return False

    if not all(holds(k) for k in p.required_certifications):
        return "certification"
    for market in p.target_markets:
        kind = MARKET_ACCESS_CERTIFICATE.get(market)
        if kind is not None and s.region != market and not holds(kind):
            return "market"
    if s.cdmo_id in p.excluded_cdmo_ids:
        return "excluded"
    cost = 0.0
    fits = True
    for load in p.loads:
        for m, h in zip(months, load.monthly_hours, strict=True):
            x = listing.get((s.id, load.process, m))
            cost += share * h * (x.price_per_hour if x else 0.0)
            need = max(0, math.ceil(share * h - 1e-6))
            free = math.floor(x.free_hours + 1e-6) if x else 0
            if need > free:
                fits = False
    if p.budget_ceiling is not None and cost > p.budget_ceiling * (1 + 1e-12):
        return "budget"
    if not fits:
        return "capacity"
    return None


def _all_months(snap: MarketSnapshot) -> list[str]:
    """The horizon: every month from the earliest window start to the latest window end."""
    from schemas.market import month_index, month_name

    if not snap.projects:
        return []
    lo = min(month_index(p.window_start) for p in snap.projects)
    hi = max(month_index(p.window_end) for p in snap.projects)
    return [month_name(i) for i in range(lo, hi + 1)]


def source_cost(snap: MarketSnapshot, p: Project, site_id: str, share: float) -> float:
    """What the maker pays a source making ``share`` of every load at ``site_id``."""
    listing = _free(snap)
    cost = 0.0
    for load in p.loads:
        for m, h in zip(_months(p), load.monthly_hours, strict=True):
            x = listing.get((site_id, load.process, m))
            cost += share * h * (x.price_per_hour if x else 0.0)
    return cost


def check_feasible(snap: MarketSnapshot, result) -> None:  # noqa: ANN001 - MatchResult
    """Every placement obeys every hard rule, recomputed from the snapshot in real hours."""
    projects = {p.id: p for p in snap.projects}
    sites = {s.id: s for s in snap.sites}
    listing = _free(snap)
    by_project: dict[str, list] = {}
    for a in result.assignments:
        by_project.setdefault(a.project_id, []).append(a)
    used: dict[tuple[str, str, str], float] = {}
    for pid, placed in by_project.items():
        p = projects[pid]
        if p.second_source_required:
            assert len(placed) == 2, f"{pid}: a second source is required"
            roles = sorted(a.role for a in placed)
            assert roles == ["primary", "second_source"], roles
            assert placed[0].cdmo_id != placed[1].cdmo_id, f"{pid}: both sources at one CDMO"
            if p.second_source_separation == SecondSourceSeparation.REGION:
                regions = {sites[a.site_id].region for a in placed}
                assert len(regions) == 2, f"{pid}: both sources in one region"
            shares = {a.role: a.share for a in placed}
            assert abs(shares["second_source"] - p.second_source_share) < 1e-12
            assert abs(shares["primary"] + shares["second_source"] - 1) < 1e-12
        else:
            assert len(placed) == 1 and placed[0].share == 1.0
        if p.budget_ceiling is not None:
            paid = sum(source_cost(snap, p, a.site_id, a.share) for a in placed)
            assert paid <= p.budget_ceiling * (1 + 1e-9), f"{pid}: pays {paid} over budget"
        for a in placed:
            s = sites[a.site_id]
            assert s.cdmo_id == a.cdmo_id
            rule = first_failed_rule(snap, p, s, a.share)
            assert rule is None, f"{pid} at {s.id} breaks {rule}"
            for load in p.loads:
                for m, h in zip(_months(p), load.monthly_hours, strict=True):
                    key = (s.id, load.process, m)
                    used[key] = used.get(key, 0.0) + a.share * h
    for key, hours in used.items():
        free = listing[key].free_hours if key in listing else 0.0
        assert hours <= free + 1e-6, f"{key}: {hours} h used, {free} h free"
    assigned = set(by_project)
    unassigned = {u.project_id for u in result.unassigned}
    assert assigned.isdisjoint(unassigned)
    assert assigned | unassigned == set(projects)
