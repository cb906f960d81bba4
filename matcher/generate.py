"""A synthetic but realistic market snapshot, deterministic for a seed.

Shape of the market (see /work/shared/domain.md):

* CDMOs own 1-12 sites. Most CDMOs are Chinese, clustered around Shenzhen, Shanghai/Suzhou,
  Beijing/Tianjin, Hangzhou, Changzhou, Chengdu and Wuhan; about one site in eight of a
  Chinese CDMO is an overseas site (EU, US, South-East Asia). About one CDMO in eight is
  Western (US or EU sites, a few with a site in China).
* Sites serve 1-3 device categories (consumables most often; clusters lean towards their
  specialities), run most processes of those categories, hold certificates that correlate
  with their region and processes (NMPA in China, FDA in the US, EU MDR in the EU, ...), with
  scopes that often stop at class II, and about one certificate in six expires inside the
  horizon.
* Capacity is listed per site, process and month, with seasonal dips (Chinese New Year in
  February for Chinese sites, August in Europe, December in the US) and part of it reserved by
  accepted deals; prices are 2.5-3x higher in the US and EU than in China.
* Projects: category weights put consumables first; class follows the category; 1-4 of the
  category's processes with loads that grow with the stage; windows inside the horizon;
  mostly for China, some for the US / EU; some have budgets, CDMO exclusions, a second source.

Everything is drawn with numpy in bulk; the pydantic objects are built with
``model_construct`` (no validation) because the data is valid by construction and validating
hundreds of thousands of listings would dominate the run. ``tests/matcher/test_generate.py``
round-trips a generated snapshot through full validation to keep that claim honest.
"""

from __future__ import annotations

import datetime as dt
import re

import numpy as np

from schemas.market import (
    CapacityListing,
    Certification,
    CertificationKind,
    DeviceCategory,
    MarketSnapshot,
    ProcessKind,
    ProcessLoad,
    Project,
    QualityRecord,
    Region,
    RegulatoryClass,
    Site,
    Stage,
    month_index,
    month_name,
    month_start,
)

C = DeviceCategory
P = ProcessKind
K = CertificationKind
CATS = list(C)
PROCS = list(P)
KINDS = list(K)
CLASSES = list(RegulatoryClass)
REGIONS = list(Region)

# Processes each category needs (and sites serving it run).
CATEGORY_PROCESSES: dict[DeviceCategory, list[ProcessKind]] = {
    C.MEDICAL_IMAGING: [
        P.PRECISION_MACHINING, P.PCB_ASSEMBLY, P.FINAL_TEST, P.SOFTWARE_VERIFICATION,
    ],
    C.IMPLANTABLE_INTERVENTIONAL: [
        P.PRECISION_MACHINING, P.CATHETER_ASSEMBLY, P.EXTRUSION, P.CLEANROOM_ASSEMBLY,
        P.EO_STERILISATION,
    ],
    C.SURGICAL_SYSTEMS: [
        P.PRECISION_MACHINING, P.PCB_ASSEMBLY, P.CLEANROOM_ASSEMBLY, P.SOFTWARE_VERIFICATION,
        P.FINAL_TEST,
    ],
    C.IVD: [P.INJECTION_MOULDING, P.CLEANROOM_ASSEMBLY, P.PCB_ASSEMBLY, P.FINAL_TEST],
    C.RADIOTHERAPY: [P.PRECISION_MACHINING, P.PCB_ASSEMBLY, P.SOFTWARE_VERIFICATION, P.FINAL_TEST],
    C.REHABILITATION: [P.PRECISION_MACHINING, P.INJECTION_MOULDING, P.PCB_ASSEMBLY, P.FINAL_TEST],
    C.AI_SAMD: [P.SOFTWARE_VERIFICATION, P.FINAL_TEST],
    C.FUTURE_INNOVATIVE: [
        P.PCB_ASSEMBLY, P.PRECISION_MACHINING, P.CLEANROOM_ASSEMBLY, P.SOFTWARE_VERIFICATION,
        P.FINAL_TEST,
    ],
    C.CONSUMABLES: [
        P.INJECTION_MOULDING, P.EXTRUSION, P.CLEANROOM_ASSEMBLY, P.EO_STERILISATION,
        P.GAMMA_STERILISATION,
    ],
}  # fmt: skip

# How often each category appears among projects, and its class mix (I, II, III).
PROJECT_CATEGORY_WEIGHT = {
    C.CONSUMABLES: 0.38, C.IVD: 0.13, C.IMPLANTABLE_INTERVENTIONAL: 0.12,
    C.MEDICAL_IMAGING: 0.08, C.SURGICAL_SYSTEMS: 0.07, C.REHABILITATION: 0.07, C.AI_SAMD: 0.05,
    C.FUTURE_INNOVATIVE: 0.05, C.RADIOTHERAPY: 0.05,
}  # fmt: skip
CLASS_MIX = {
    C.CONSUMABLES: (0.45, 0.45, 0.10), C.IVD: (0.3, 0.5, 0.2),
    C.IMPLANTABLE_INTERVENTIONAL: (0.0, 0.3, 0.7), C.MEDICAL_IMAGING: (0.0, 0.6, 0.4),
    C.SURGICAL_SYSTEMS: (0.0, 0.4, 0.6), C.REHABILITATION: (0.4, 0.5, 0.1),
    C.AI_SAMD: (0.0, 0.6, 0.4), C.FUTURE_INNOVATIVE: (0.0, 0.5, 0.5),
    C.RADIOTHERAPY: (0.0, 0.2, 0.8),
}  # fmt: skip
# Site category weights: consumables are what most CDMO capacity serves today.
SITE_CATEGORY_WEIGHT = {
    C.CONSUMABLES: 0.30, C.IVD: 0.12, C.IMPLANTABLE_INTERVENTIONAL: 0.11,
    C.MEDICAL_IMAGING: 0.09, C.SURGICAL_SYSTEMS: 0.08, C.REHABILITATION: 0.09, C.AI_SAMD: 0.07,
    C.FUTURE_INNOVATIVE: 0.07, C.RADIOTHERAPY: 0.07,
}  # fmt: skip

# Chinese clusters: (city, share of Chinese CDMOs, categories the cluster leans towards).
CN_CLUSTERS = [
    ("Shenzhen", 0.28, [C.MEDICAL_IMAGING, C.IVD, C.SURGICAL_SYSTEMS, C.REHABILITATION]),
    ("Shanghai", 0.16, [C.IMPLANTABLE_INTERVENTIONAL, C.IVD, C.SURGICAL_SYSTEMS, C.AI_SAMD]),
    ("Suzhou", 0.14, [C.IMPLANTABLE_INTERVENTIONAL, C.IVD, C.CONSUMABLES]),
    ("Beijing", 0.12, [C.MEDICAL_IMAGING, C.RADIOTHERAPY, C.AI_SAMD, C.REHABILITATION]),
    ("Tianjin", 0.05, [C.CONSUMABLES, C.REHABILITATION]),
    ("Hangzhou", 0.08, [C.IVD, C.AI_SAMD, C.CONSUMABLES]),
    ("Changzhou", 0.07, [C.CONSUMABLES, C.IMPLANTABLE_INTERVENTIONAL]),
    ("Chengdu", 0.05, [C.FUTURE_INNOVATIVE, C.CONSUMABLES]),
    ("Wuhan", 0.05, [C.RADIOTHERAPY, C.CONSUMABLES, C.FUTURE_INNOVATIVE]),
]
# Overseas locations: (region, country, city).
OVERSEAS = [
    (Region.EU, "DE", "Munich"), (Region.EU, "NL", "Eindhoven"), (Region.EU, "IE", "Galway"),
    (Region.EU, "HU", "Budapest"), (Region.US, "US", "Minneapolis"),
    (Region.US, "US", "Boston"), (Region.US, "US", "Irvine"), (Region.SEA, "MY", "Penang"),
    (Region.SEA, "SG", "Singapore"), (Region.SEA, "TH", "Bangkok"), (Region.SEA, "VN", "Hanoi"),
]  # fmt: skip
WESTERN_HOMES = [
    (Region.US, "US", "Minneapolis"), (Region.US, "US", "Boston"), (Region.US, "US", "Irvine"),
    (Region.EU, "DE", "Tuttlingen"), (Region.EU, "IE", "Galway"), (Region.EU, "CH", "Neuchatel"),
]  # fmt: skip

# Per region (CN, US, EU, SEA, OTHER): chance a site holds each certificate kind.
REGION_CERT_P = {
    K.ISO_13485: (0.95, 0.97, 0.97, 0.9, 0.9),
    K.NMPA_LICENCE: (0.9, 0.05, 0.1, 0.15, 0.05),
    K.FDA_REGISTRATION: (0.25, 0.9, 0.3, 0.3, 0.2),
    K.EU_MDR: (0.2, 0.25, 0.9, 0.2, 0.2),
    K.MDSAP: (0.1, 0.4, 0.3, 0.15, 0.1),
}
# Certificates tied to processes: (kind, processes that make it likely).
PROCESS_CERTS = [
    (K.CLEANROOM_ISO7, [P.CLEANROOM_ASSEMBLY, P.CATHETER_ASSEMBLY]),
    (K.CLEANROOM_ISO8, [P.CLEANROOM_ASSEMBLY, P.CATHETER_ASSEMBLY, P.INJECTION_MOULDING]),
    (K.STERILISATION_EO, [P.EO_STERILISATION]),
    (K.STERILISATION_GAMMA, [P.GAMMA_STERILISATION]),
    (K.IEC_62304, [P.SOFTWARE_VERIFICATION]),
]
# Regulatory certificates whose scope may stop at class II.
CLASS_SCOPED = {K.NMPA_LICENCE, K.FDA_REGISTRATION, K.EU_MDR, K.MDSAP}

PROCESS_PRICE = {
    P.PRECISION_MACHINING: 45.0, P.INJECTION_MOULDING: 35.0, P.EXTRUSION: 30.0,
    P.PCB_ASSEMBLY: 40.0, P.CLEANROOM_ASSEMBLY: 38.0, P.CATHETER_ASSEMBLY: 50.0,
    P.EO_STERILISATION: 25.0, P.GAMMA_STERILISATION: 28.0, P.SOFTWARE_VERIFICATION: 70.0,
    P.FINAL_TEST: 42.0,
}  # fmt: skip
REGION_PRICE = {Region.CN: 1.0, Region.US: 2.9, Region.EU: 2.6, Region.SEA: 1.25, Region.OTHER: 1.5}
# Capacity factor per calendar month (Jan..Dec) by region: holidays and plant shutdowns.
SEASON = {
    Region.CN: (0.85, 0.55, 0.95, 1, 1, 1, 1, 1, 1, 0.9, 1, 1),
    Region.EU: (0.95, 1, 1, 1, 1, 1, 0.9, 0.7, 1, 1, 1, 0.85),
    Region.US: (0.95, 1, 1, 1, 1, 1, 0.9, 1, 1, 1, 0.95, 0.85),
    Region.SEA: (0.9, 0.9, 1, 0.9, 1, 1, 1, 1, 1, 1, 1, 0.95),
    Region.OTHER: (1,) * 12,
}
STAGE_HOURS = {Stage.DEVELOPMENT: 40.0, Stage.PILOT: 100.0, Stage.COMMERCIAL: 200.0}
STAGE_WINDOW = {Stage.DEVELOPMENT: (2, 6), Stage.PILOT: (3, 8), Stage.COMMERCIAL: (6, 24)}
# Target market sets and their weights.
MARKET_SETS = [
    ((Region.CN,), 0.68), ((Region.CN, Region.US), 0.08), ((Region.CN, Region.EU), 0.08),
    ((Region.CN, Region.US, Region.EU), 0.04), ((Region.US,), 0.05), ((Region.EU,), 0.04),
    ((Region.CN, Region.SEA), 0.02), ((Region.OTHER,), 0.01),
]  # fmt: skip


def _weights(d: dict, keys: list) -> np.ndarray:
    w = np.array([d.get(k, 0.0) for k in keys], dtype=np.float64)
    return w / w.sum()


def _pick_k(rng: np.random.Generator, weights: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Per row, ``k[i]`` distinct columns drawn with probability ~ weights (Gumbel top-k).

    Returns a bool matrix [rows, columns]; zero-weight columns are never drawn.
    """
    with np.errstate(divide="ignore"):
        keys = np.log(weights) + rng.gumbel(size=weights.shape)
    rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
    return (rank < k[:, None]) & (weights > 0)


def _date_in_month(month: int, day: np.ndarray | int) -> dt.date:
    return month_start(month_name(month)) + dt.timedelta(days=int(day) - 1)


# Bounds on what one process can generate. Memory follows the monthly figures (a project's
# months, a site's possible listings): 0.5 KiB each was measured at 20000 x 2000 x 12 (229 MiB
# for 4.8e5), so MAX_CELLS is ~14 GiB; a 10x market (1,000,000 x 100,000 x 12) is 2.4e7.
# Beyond them the command fails with one line instead of a MemoryError.
MAX_PROJECTS = 2_000_000
MAX_SITES = 200_000
MAX_MONTHS = 120
MAX_CELLS = 30_000_000


def generate_market(
    projects: int,
    sites: int,
    months: int = 12,
    seed: int = 0,
    start: str = "2026-01",
    capacity_scale: float = 1.0,
) -> MarketSnapshot:
    """A snapshot with ``projects`` projects, ``sites`` sites and a ``months``-month horizon.

    ``capacity_scale`` multiplies every site's capacity: below 1 gives a tight market where
    projects crowd the good sites (used by the benchmarks as a stress case).
    """
    if projects < 0 or sites < 0 or months < 1:
        raise ValueError("projects and sites must be >= 0 and months >= 1")
    if projects > MAX_PROJECTS or sites > MAX_SITES or months > MAX_MONTHS:
        raise ValueError(
            f"at most {MAX_PROJECTS} projects, {MAX_SITES} sites and {MAX_MONTHS} months "
            f"(asked for {projects}, {sites} and {months})"
        )
    cells = (projects + sites * len(ProcessKind)) * months
    if cells > MAX_CELLS:
        raise ValueError(
            f"{projects} projects and {sites} sites over {months} months make about {cells:.2e} "
            f"monthly figures; at most {MAX_CELLS:.0e} fit in memory"
        )
    if not capacity_scale > 0:
        raise ValueError("capacity_scale must be positive")
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", start):
        raise ValueError(f"start must be a YYYY-MM month, not {start!r}")
    rng = np.random.default_rng(seed)
    h0 = month_index(start)
    site_objs, listings, cdmo_ids = _sites(rng, sites, months, h0, capacity_scale)
    proj_objs = _projects(rng, projects, months, h0, cdmo_ids)
    return MarketSnapshot.model_construct(
        version=1,
        as_of=month_start(start),
        sites=site_objs,
        listings=listings,
        projects=proj_objs,
        previous=[],
        pinned=[],
    )


def _sites(
    rng: np.random.Generator, n: int, months: int, h0: int, capacity_scale: float
) -> tuple[list[Site], list[CapacityListing], list[str]]:
    if n == 0:
        return [], [], []
    # CDMOs and their sizes (geometric, capped), Chinese or Western.
    sizes = np.minimum(rng.geometric(0.4, size=n), 12)
    n_cdmo = int(np.searchsorted(np.cumsum(sizes), n) + 1)
    cdmo_of = np.repeat(np.arange(n_cdmo), sizes[:n_cdmo])[:n]
    first_site = np.r_[True, cdmo_of[1:] != cdmo_of[:-1]]
    western = rng.random(n_cdmo) < 0.12
    home_cluster = rng.choice(len(CN_CLUSTERS), size=n_cdmo, p=[c[1] for c in CN_CLUSTERS])
    home_west = rng.integers(0, len(WESTERN_HOMES), n_cdmo)

    region = np.empty(n, dtype=object)
    country = np.empty(n, dtype=object)
    city = np.empty(n, dtype=object)
    overseas = np.zeros(n, dtype=bool)
    cluster = np.full(n, -1)
    u = rng.random(n)
    other_cluster = rng.choice(len(CN_CLUSTERS), size=n, p=[c[1] for c in CN_CLUSTERS])
    abroad = rng.integers(0, len(OVERSEAS), n)
    for i in range(n):
        c = cdmo_of[i]
        if western[c]:
            if not first_site[i] and u[i] < 0.07:
                region[i], country[i], city[i] = Region.CN, "CN", "Suzhou"
                cluster[i] = 2
            else:
                region[i], country[i], city[i] = WESTERN_HOMES[home_west[c]]
        elif first_site[i] or u[i] >= 0.22:
            cluster[i] = home_cluster[c] if first_site[i] or u[i] < 0.6 else other_cluster[i]
            region[i], country[i], city[i] = Region.CN, "CN", CN_CLUSTERS[cluster[i]][0]
        else:
            region[i], country[i], city[i] = OVERSEAS[abroad[i]]
            overseas[i] = True
    reg_idx = np.array([REGIONS.index(r) for r in region])

    # Categories: 1-3 per site, leaning towards the cluster's specialities.
    cat_w = np.tile(_weights(SITE_CATEGORY_WEIGHT, CATS), (n, 1))
    for ci, (_, _, lean) in enumerate(CN_CLUSTERS):
        rows = cluster == ci
        for cat in lean:
            cat_w[rows, CATS.index(cat)] *= 2.5
    n_cat = 1 + rng.binomial(2, 0.35, size=n)
    cats = _pick_k(rng, cat_w, n_cat)
    high_end = cats[:, [i for i, c in enumerate(CATS) if c != C.CONSUMABLES]].any(axis=1)
    cls_p = np.stack([np.full(n, 0.95), np.full(n, 0.9), np.where(high_end, 0.6, 0.3)], axis=1)
    classes = rng.random((n, 3)) < cls_p
    classes[~classes.any(axis=1), 1] = True
    cat_proc = np.zeros((len(CATS), len(PROCS)), dtype=bool)
    for c, ps in CATEGORY_PROCESSES.items():
        cat_proc[CATS.index(c), [PROCS.index(p) for p in ps]] = True
    can_run = (cats.astype(np.int64) @ cat_proc.astype(np.int64)) > 0
    runs = can_run & (rng.random(can_run.shape) < 0.8)
    none = ~runs.any(axis=1)
    runs[none] = can_run[none]

    # Certificates: region- and process-driven; scopes; validity (some expire in horizon).
    kinds_held = np.zeros((n, len(KINDS)), dtype=bool)
    for kind, probs in REGION_CERT_P.items():
        p = np.array(probs)[reg_idx]
        if kind == K.NMPA_LICENCE:
            p = np.where(overseas, 0.35, p)
        kinds_held[:, KINDS.index(kind)] = rng.random(n) < p
    for kind, procs in PROCESS_CERTS:
        related = runs[:, [PROCS.index(q) for q in procs]].any(axis=1)
        kinds_held[:, KINDS.index(kind)] = rng.random(n) < np.where(related, 0.85, 0.04)
    scope_iii = rng.random((n, len(KINDS))) < 0.6
    from_back = rng.integers(1, 48, (n, len(KINDS)))
    from_day = rng.integers(1, 29, (n, len(KINDS)))
    expiring = rng.random((n, len(KINDS))) < 0.17
    until_in = rng.integers(0, months, (n, len(KINDS)))
    until_out = months + rng.integers(1, 36, (n, len(KINDS)))
    until_day = rng.integers(1, 29, (n, len(KINDS)))

    quality_on_time = np.round(rng.beta(18, 2, n), 3)
    findings = rng.poisson(np.where(overseas, 1.0, 1.6))
    lead = np.minimum(2 + rng.poisson(4, n) + 2 * overseas, 104)

    # Capacity per (site, process): lognormal base, seasonal per month, part reserved.
    # Hours per site, process and month: lognormal around 2,500 h (about 15 full-time staff
    # on a process), so a commercial project takes a sizeable but not dominant share.
    base_cap = np.round(
        capacity_scale * np.exp(rng.normal(np.log(2500.0), 0.6, (n, len(PROCS)))), -1
    )
    price_base = np.array([PROCESS_PRICE[p] for p in PROCS])
    region_price = np.array([REGION_PRICE[r] for r in REGIONS])[reg_idx]
    price = (
        price_base[None, :] * region_price[:, None] * np.exp(rng.normal(0, 0.15, (n, len(PROCS))))
    )
    season = np.array([SEASON[r] for r in REGIONS])[reg_idx]  # [n, 12]
    cal = (h0 + np.arange(months)) % 12
    cap = base_cap[:, :, None] * season[:, None, cal]
    cap = np.round(cap * rng.uniform(0.9, 1.1, cap.shape), 0)
    reserved = np.round(cap * rng.uniform(0, 0.6, cap.shape) * (rng.random(cap.shape) < 0.7), 0)
    month_price = np.round(price[:, :, None] * rng.uniform(0.97, 1.03, cap.shape), 2)
    unlisted_site = rng.random(n) < 0.03  # declares processes, lists nothing yet
    month_names = [month_name(h0 + m) for m in range(months)]

    cdmo_ids = [f"C{c:05d}" for c in range(n_cdmo)]
    site_objs: list[Site] = []
    listings: list[CapacityListing] = []
    for i in range(n):
        sid = f"S{i:06d}"
        certs = []
        for k in np.flatnonzero(kinds_held[i]):
            kind = KINDS[k]
            scope = [RegulatoryClass.I, RegulatoryClass.II]
            if kind not in CLASS_SCOPED or (classes[i, 2] and scope_iii[i, k]):
                scope.append(RegulatoryClass.III)
            until_month = h0 + (until_in[i, k] if expiring[i, k] else until_out[i, k])
            certs.append(
                Certification.model_construct(
                    kind=kind,
                    issuer="",
                    device_classes=scope,
                    valid_from=_date_in_month(h0 - from_back[i, k], from_day[i, k]),
                    valid_until=_date_in_month(until_month, until_day[i, k]),
                )
            )
        procs = [PROCS[p] for p in np.flatnonzero(runs[i])]
        site_objs.append(
            Site.model_construct(
                id=sid,
                cdmo_id=cdmo_ids[cdmo_of[i]],
                name=f"{cdmo_ids[cdmo_of[i]]} {city[i]}",
                country=country[i],
                region=region[i],
                overseas=bool(overseas[i]),
                certifications=certs,
                processes=procs,
                categories=[CATS[c] for c in np.flatnonzero(cats[i])],
                device_classes=[CLASSES[c] for c in np.flatnonzero(classes[i])],
                quality=QualityRecord.model_construct(
                    inspection_findings=int(findings[i]),
                    on_time_rate=float(quality_on_time[i]),
                    lead_time_weeks=int(lead[i]),
                ),
            )
        )
        if unlisted_site[i]:
            continue
        for p in np.flatnonzero(runs[i]):
            caps = cap[i, p].tolist()
            res = reserved[i, p].tolist()
            prices = month_price[i, p].tolist()
            for m in range(months):
                listings.append(
                    CapacityListing.model_construct(
                        site_id=sid,
                        process=PROCS[p],
                        month=month_names[m],
                        capacity_hours=caps[m],
                        reserved_hours=res[m],
                        price_per_hour=prices[m],
                    )
                )
    return site_objs, listings, cdmo_ids


def _projects(
    rng: np.random.Generator, n: int, months: int, h0: int, cdmo_ids: list[str]
) -> list[Project]:
    if n == 0:
        return []
    cat = rng.choice(len(CATS), size=n, p=_weights(PROJECT_CATEGORY_WEIGHT, CATS))
    cls_mix = np.array([CLASS_MIX[c] for c in CATS])
    cls = (rng.random(n)[:, None] > np.cumsum(cls_mix[cat], axis=1)).sum(axis=1)
    cls = np.minimum(cls, 2)
    stages = list(Stage)
    stage = rng.choice(3, size=n, p=[0.45, 0.3, 0.25])
    lo = np.array([STAGE_WINDOW[s][0] for s in stages])[stage]
    hi = np.array([STAGE_WINDOW[s][1] for s in stages])[stage]
    length = np.minimum(rng.integers(lo, hi + 1), months)
    length = np.maximum(length, 1)
    w_start = (rng.random(n) * (months - length + 1)).astype(np.int64)

    cat_proc_w = np.zeros((len(CATS), len(PROCS)))
    for c, ps in CATEGORY_PROCESSES.items():
        cat_proc_w[CATS.index(c), [PROCS.index(p) for p in ps]] = 1.0
    n_proc = rng.choice([1, 2, 3, 4], size=n, p=[0.3, 0.35, 0.25, 0.1])
    procs = _pick_k(rng, cat_proc_w[cat], n_proc)
    base_hours = np.array([STAGE_HOURS[s] for s in stages])[stage]
    proc_hours = base_hours[:, None] * np.exp(rng.normal(0, 0.5, (n, len(PROCS))))

    mset = rng.choice(len(MARKET_SETS), size=n, p=[w for _, w in MARKET_SETS])
    prio = np.clip(np.round(rng.normal(5.5, 2.0, n)), 1, 10).astype(int)
    iso = rng.random(n) < 0.9
    want_proc_cert = rng.random((n, len(PROCESS_CERTS))) < 0.65
    nmpa_iii = rng.random(n) < 0.3
    mdsap = rng.random(n) < 0.1
    has_budget = rng.random(n) < 0.6
    budget_factor = rng.uniform(1.1, 3.5, n)
    has_excl = rng.random(n) < 0.08
    n_excl = rng.integers(1, 4, n)
    second = (stage > 0) & (rng.random(n) < 0.08)
    share = rng.choice([0.2, 0.25, 0.3, 0.4, 0.5], size=n)
    price_base = np.array([PROCESS_PRICE[p] for p in PROCS])
    jitter = rng.uniform(0.7, 1.3, (n, months))
    zero_month = rng.random((n, months)) < 0.05

    out: list[Project] = []
    for j in range(n):
        L = int(length[j])
        s0 = int(w_start[j])
        loads = []
        total_cost = 0.0
        for p in np.flatnonzero(procs[j]):
            hours = np.round(proc_hours[j, p] * jitter[j, :L] * ~zero_month[j, :L] * 2) / 2
            total_cost += float(hours.sum()) * price_base[p]
            loads.append(
                ProcessLoad.model_construct(process=PROCS[p], monthly_hours=hours.tolist())
            )
        required = [K.ISO_13485] if iso[j] else []
        proc_set = {PROCS[p] for p in np.flatnonzero(procs[j])}
        for t, (kind, related) in enumerate(PROCESS_CERTS):
            if want_proc_cert[j, t] and proc_set.intersection(related):
                required.append(kind)
        markets = list(MARKET_SETS[mset[j]][0])
        if cls[j] == 2 and Region.CN in markets and nmpa_iii[j]:
            required.append(K.NMPA_LICENCE)
        if Region.US in markets and mdsap[j]:
            required.append(K.MDSAP)
        excluded = (
            sorted({cdmo_ids[c] for c in rng.integers(0, len(cdmo_ids), n_excl[j])})
            if has_excl[j] and cdmo_ids
            else []
        )
        out.append(
            Project.model_construct(
                id=f"P{j:07d}",
                maker_id=f"M{j // 5:06d}",
                title="",
                category=CATS[cat[j]],
                device_class=CLASSES[cls[j]],
                target_markets=markets,
                required_certifications=required,
                loads=loads,
                window_start=month_name(h0 + s0),
                window_end=month_name(h0 + s0 + L - 1),
                stage=stages[stage[j]],
                priority=int(prio[j]),
                budget_ceiling=(
                    round(total_cost * budget_factor[j], 2)
                    if has_budget[j] and total_cost > 0
                    else None
                ),
                excluded_cdmo_ids=excluded,
                second_source_required=bool(second[j]),
                second_source_share=float(share[j]),
                confidential=True,
            )
        )
    return out
