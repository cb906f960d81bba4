"""Snapshot -> arrays: the supply side (sites) and the demand side (rows), validated once.

Two halves, so that the supply side can be cached per market version:

* ``encode_sites(snapshot)`` -> ``SiteTable``: certificates, quality, capacity and prices of
  every site over the months its listings span. It does not depend on the projects, so
  instant candidates (one project against the whole market) reuse it until the market
  version changes; ``SiteTable.over(h0, months)`` lays it over a solve's horizon (a cheap
  array copy, padded with empty months where the horizon runs past the listings);
* ``encode(snapshot, params, sites=None)`` -> ``Encoded``: the rows (projects, or the two
  sources of a project that needs a second source) and the site arrays over their horizon.

Decisions that are made here and nowhere else:

* a *row* (model item) is a project, or, for a project that needs a second source, one of two
  linked rows: the primary carrying ``1 - second_source_share`` of every load, of the value
  and of the stability bonus, the second carrying ``second_source_share``;
* resources are (site, process, month) with capacity = free hours rounded DOWN to whole
  hours, and every load is rounded UP to whole hours (after the share is applied), so any
  model-feasible answer is feasible in real hours (up to ``HOURS_TOL`` of float noise);
* months are horizon-relative: the horizon runs from the earliest window start to the
  latest window end among the projects; listings outside it are ignored;
* fit in [0, 1] = ``FIT_QUALITY * quality + FIT_MARKET * [site region is a target market]``,
  quality = 0.5 on-time rate + 0.25 / (1 + inspection findings)
  + 0.25 max(0, 1 - lead time weeks / 26); the value formula built on it lives in the kernels
  (``matcher.kernels``, its NumPy twin in ``matcher.reference``), its parts are explained by
  ``matcher.pricing.value_parts``;
* the row coefficients of that formula: ``a = share * priority_w * priority``,
  ``b = a * fit_w``, ``stab = share * stability_w`` (at the previous proposal's site);
* budget: the maker pays the blended cost of its sources (each row's cost is its share of
  the load at its site's prices); each row alone is held to the whole ceiling here, and the
  two rows of a pair together by a side resource (``matcher.pairs``), as is the rule that a
  second source is in another region (``Project.second_source_separation``);
* certificates: a chain of renewals of one kind and scope without a gap counts as one
  certificate over its whole span (``matcher.certificates``);
* a site runs a process when it lists the process in ``Site.processes`` AND has at least one
  listing for it inside the horizon; a listing for a process the site does not declare is
  ignored; a month with no listing has no free capacity.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from matcher import kernels
from matcher.certificates import renewal_chains
from matcher.control import Stopped
from matcher.kernels import MKT_SHIFT, N_CLASSES, PROC_SHIFT, RowArrays, SiteArrays
from matcher.pairs import N_REGIONS
from schemas.market import (
    MARKET_ACCESS_CERTIFICATE,
    CertificationKind,
    DeviceCategory,
    MarketSnapshot,
    ProcessKind,
    Region,
    RegulatoryClass,
    RunParams,
    SecondSourceSeparation,
    month_index,
    month_name,
)

CATEGORIES = list(DeviceCategory)
CLASSES = list(RegulatoryClass)
CERT_KINDS = list(CertificationKind)
REGIONS = list(Region)
PROCESSES = list(ProcessKind)
CAT_IDX = {c: i for i, c in enumerate(CATEGORIES)}
CLS_IDX = {c: i for i, c in enumerate(CLASSES)}
CERT_IDX = {c: i for i, c in enumerate(CERT_KINDS)}
REGION_IDX = {r: i for i, r in enumerate(REGIONS)}
PROC_IDX = {p: i for i, p in enumerate(PROCESSES)}
N_PROC = len(PROCESSES)
assert len(REGIONS) == N_REGIONS
assert len(CLASSES) == N_CLASSES and len(CATEGORIES) * N_CLASSES <= 32
assert len(CERT_KINDS) <= MKT_SHIFT and len(REGIONS) <= PROC_SHIFT - MKT_SHIFT and N_PROC <= 16

FIT_QUALITY = 0.75
FIT_MARKET = 0.25
# Float noise tolerated when rounding hours to whole hours (loads up, capacity down).
HOURS_TOL = 1e-6
ArrayOrFloat = float | np.ndarray


# Sites or projects between two checks of a stop request while encoding (~0.05 s of Python).
STOP_EVERY = 1024


def whole_hours(hours: ArrayOrFloat, share: ArrayOrFloat = 1.0) -> Any:
    """THE rounding rule of loads: ``hours * share`` rounded UP to whole hours (never below 0).

    Scalars give an ``int``, arrays an int64 array. The optimiser's resource uses and the
    service's capacity holds (deals, the run commit) both call this, so they cannot disagree.
    """
    units = np.maximum(np.ceil(np.asarray(hours, dtype=np.float64) * share - HOURS_TOL), 0)
    return int(units) if units.ndim == 0 else units.astype(np.int64)


def source_shares(second_source_required: bool, second_source_share: float) -> tuple[float, ...]:
    """THE split of a project between its sources, in role order (primary, second source):
    the primary carries ``1 - share`` when a second source is required, else everything."""
    if second_source_required:
        return (1.0 - second_source_share, second_source_share)
    return (1.0,)


def free_whole_hours(capacity_hours: ArrayOrFloat, reserved_hours: ArrayOrFloat) -> Any:
    """Free capacity ``capacity - reserved`` rounded DOWN to whole hours (never below 0);
    scalars give an ``int``, arrays an int64 array."""
    free = np.floor(
        np.maximum(np.asarray(capacity_hours, dtype=np.float64) - np.asarray(reserved_hours), 0.0)
        + HOURS_TOL
    )
    return int(free) if free.ndim == 0 else free.astype(np.int64)


MAX_HORIZON_MONTHS = 120
# Site words kept in memory at once (groups x sites serving them); beyond this the snapshot
# has too many distinct (category, class, window) combinations for its number of sites.
MAX_GROUP_WORDS = 200_000_000

ROLE_PRIMARY = 0
ROLE_SECOND = 1


class SnapshotError(ValueError):
    """A snapshot that parses but cannot be matched (checked once, in ``encode``)."""


def site_quality(on_time_rate: float, findings: int, lead_time_weeks: int) -> float:
    """Quality in [0, 1] from the site's record (see the module docstring)."""
    return (
        0.5 * on_time_rate + 0.25 / (1.0 + findings) + 0.25 * max(0.0, 1.0 - lead_time_weeks / 26.0)
    )


def _first_month(day: dt.date) -> int:
    """First month whose first day is on or after ``day`` (a window may start there)."""
    return month_index(f"{day.year:04d}-{day.month:02d}") + (0 if day.day == 1 else 1)


def _last_month(day: dt.date) -> int:
    """Last month whose last day is on or before ``day`` (a window may end there)."""
    idx = month_index(f"{day.year:04d}-{day.month:02d}")
    return idx if (day + dt.timedelta(days=1)).day == 1 else idx - 1


@dataclass(frozen=True)
class Encoded:
    sites: SiteArrays
    rows: RowArrays
    horizon_start: int  # month index of horizon month 0
    n_months: int
    project_ids: list[str]
    site_ids: list[str]
    cdmo_ids: list[str]
    row_project: np.ndarray  # int32 [N]
    row_role: np.ndarray  # int8 [N]
    row_share: np.ndarray  # float64 [N]
    project_rows: np.ndarray  # int32 [n_projects, 2]: primary row, second row or -1
    pinned: dict[int, tuple[int, int]]  # project -> (site, second site or -1)
    project_budget: np.ndarray  # float64 [n_projects], inf when none (blended for two sources)
    project_apart_region: np.ndarray  # bool [n_projects]: two sources in different regions
    notes: list[str] = field(default_factory=list)
    # (row, site) pairs that are never candidates (snapshot.forbidden, for every role)
    forbidden: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))

    @cached_property
    def words(self) -> kernels.GroupWords:
        """Sites serving each row group, computed once and reused by every scoring pass."""
        return kernels.group_words(self.sites, self.rows)

    @cached_property
    def lanes(self) -> kernels.Lanes:
        """The lane layout of every row's list (``kernels.lanes``), built by the first scoring
        pass that takes the lanes and reused by the others (pricing, the market bound)."""
        return kernels.lanes(self.sites, self.rows, self.words)

    @cached_property
    def month_names(self) -> list[str]:
        """``YYYY-MM`` of every horizon month."""
        return [month_name(self.horizon_start + m) for m in range(self.n_months)]


def _csr(lists: list[list[int]], dtype: type) -> tuple[np.ndarray, np.ndarray]:
    flat: np.ndarray
    ptr = np.zeros(len(lists) + 1, dtype=np.int64)
    np.cumsum([len(x) for x in lists], out=ptr[1:])
    flat = np.fromiter((v for x in lists for v in x), dtype=dtype, count=int(ptr[-1]))
    return ptr, flat


# Listing months a SiteTable spans at most; beyond this only the solve's horizon is encoded
# (the table is then not reusable across horizons, but memory stays bounded).
MAX_SITE_MONTHS = 2 * MAX_HORIZON_MONTHS


@dataclass(frozen=True)
class SiteTable:
    """Every site's arrays over months ``h0 .. h0 + months - 1`` (absolute month indices),
    independent of the projects: cache it per market version and lay it over a solve's
    horizon with ``over``. Certificate months are absolute (``cert_first`` the first month a
    window may start in, ``cert_last`` the last it may end in)."""

    h0: int
    months: int
    site_ids: list[str]
    cdmo_ids: list[str]
    cc: np.ndarray
    cdmo: np.ndarray
    region: np.ndarray  # int64 [S] region index
    declared: np.ndarray  # int64 [S] declared process bits
    fitq: np.ndarray
    free: np.ndarray  # int32 [S, N_PROC, months]
    price: np.ndarray  # float64 [S, N_PROC, months]
    cert_ptr: np.ndarray
    cert_kind: np.ndarray
    cert_cls: np.ndarray
    cert_first: np.ndarray  # int64, absolute month index
    cert_last: np.ndarray  # int64, absolute month index
    listed: np.ndarray  # bool [S, N_PROC, months]: a listing exists (declared process)

    @property
    def n_sites(self) -> int:
        return len(self.cc)

    @cached_property
    def cdmo_index(self) -> dict[str, int]:
        """CDMO id -> index (computed once per table: instant candidates encode per request)."""
        return {c: i for i, c in enumerate(self.cdmo_ids)}

    @cached_property
    def cc_counts(self) -> np.ndarray:
        """Sites serving each category x class bit (int64 [32])."""
        return np.array(
            [np.count_nonzero((self.cc >> np.uint32(c)) & np.uint32(1)) for c in range(32)]
        )

    def over(self, h0: int, months: int) -> SiteArrays:
        """The kernels' arrays over the horizon ``h0 .. h0 + months - 1``: months outside the
        listings have no capacity, certificate months become horizon-relative (clamped)."""
        n = self.n_sites
        free = np.zeros((n, N_PROC, months), dtype=np.int32)
        price = np.zeros((n, N_PROC, months), dtype=np.float64)
        lo, hi = max(h0, self.h0), min(h0 + months, self.h0 + self.months)
        if hi > lo:
            free[:, :, lo - h0 : hi - h0] = self.free[:, :, lo - self.h0 : hi - self.h0]
            price[:, :, lo - h0 : hi - h0] = self.price[:, :, lo - self.h0 : hi - self.h0]
        # A process counts as listed when it has a listing inside the horizon.
        listed = np.zeros(n, dtype=np.int64)
        has: np.ndarray
        if self.months and hi > lo:
            has = np.any(self.listed[:, :, lo - self.h0 : hi - self.h0], axis=2)
        else:
            has = np.zeros((n, N_PROC), dtype=bool)
        for proc in range(N_PROC):
            listed |= has[:, proc].astype(np.int64) << proc
        own_market = np.int64(1) << (MKT_SHIFT + self.region)
        word0 = ((self.declared & listed) << PROC_SHIFT) | own_market
        access = np.full(len(CERT_KINDS), -1, dtype=np.int32)
        for reg, kind in MARKET_ACCESS_CERTIFICATE.items():
            access[CERT_IDX[kind]] = REGION_IDX[reg]
        return SiteArrays(
            cc=self.cc,
            cdmo=self.cdmo,
            region_bit=(np.int64(1) << self.region).astype(np.uint32),
            word0=word0.astype(np.uint32),
            fitq=self.fitq,
            free=free.reshape(n, N_PROC * months),
            price=price.reshape(n, N_PROC * months),
            cert_ptr=self.cert_ptr,
            cert_kind=self.cert_kind,
            cert_cls=self.cert_cls,
            cert_first=np.clip(self.cert_first - h0, 0, months).astype(np.int32),
            cert_last=np.clip(self.cert_last - h0, -1, months - 1).astype(np.int32),
            access_region=access,
        )


def listing_span(snapshot: MarketSnapshot) -> tuple[int, int]:
    """(first month, number of months) covered by the snapshot's listings."""
    if not snapshot.listings:
        return month_index(f"{snapshot.as_of.year:04d}-{snapshot.as_of.month:02d}"), 0
    months = [month_index(x.month) for x in snapshot.listings]
    return min(months), max(months) - min(months) + 1


def encode_sites(
    snapshot: MarketSnapshot,
    span: tuple[int, int] | None = None,
    stop: Callable[[], bool] | None = None,
) -> SiteTable:
    """The supply side of ``snapshot`` over ``span`` (default: the months its listings span).
    ``stop()`` (e.g. a run's cancel flag) is asked every ``STOP_EVERY`` sites: ``Stopped``."""
    h0, months = listing_span(snapshot) if span is None else span
    n = len(snapshot.sites)
    site_idx = {s.id: i for i, s in enumerate(snapshot.sites)}
    cdmo_idx: dict[str, int] = {}
    cdmo = np.array(
        [cdmo_idx.setdefault(s.cdmo_id, len(cdmo_idx)) for s in snapshot.sites], dtype=np.int32
    )
    cc = np.zeros(n, dtype=np.uint32)
    region = np.zeros(n, dtype=np.int64)
    declared = np.zeros(n, dtype=np.int64)
    fitq = np.zeros(n, dtype=np.float64)
    certs: list[tuple[int, int, int, int]] = []
    n_certs = np.zeros(n, dtype=np.int64)
    for i, s in enumerate(snapshot.sites):
        if stop is not None and i % STOP_EVERY == 0 and stop():
            raise Stopped("encoding stopped")
        bits = 0
        for c in s.categories:
            for k in s.device_classes:
                bits |= 1 << (CAT_IDX[c] * N_CLASSES + CLS_IDX[k])
        cc[i] = bits
        region[i] = REGION_IDX[s.region]
        declared[i] = sum(1 << PROC_IDX[p] for p in set(s.processes))
        q = s.quality
        fitq[i] = FIT_QUALITY * site_quality(
            q.on_time_rate, q.inspection_findings, q.lead_time_weeks
        )
        # A chain of renewals (same kind and scope, no gap) counts as one certificate.
        chains = renewal_chains(s.certifications)
        n_certs[i] = len(chains)
        certs.extend(
            (
                CERT_IDX[kind],
                sum(1 << CLS_IDX[k] for k in scope),
                _first_month(valid_from),
                _last_month(valid_until),
            )
            for kind, scope, valid_from, valid_until in chains
        )

    free = np.zeros((n, N_PROC, months), dtype=np.int32)
    price = np.zeros((n, N_PROC, months), dtype=np.float64)
    listed = np.zeros((n, N_PROC, months), dtype=np.bool_)
    if snapshot.listings and months:
        ls = snapshot.listings
        l_site = np.fromiter((site_idx[x.site_id] for x in ls), dtype=np.int64, count=len(ls))
        l_proc = np.fromiter((PROC_IDX[x.process] for x in ls), dtype=np.int64, count=len(ls))
        l_month = np.fromiter((month_index(x.month) for x in ls), dtype=np.int64, count=len(ls))
        l_cap = np.fromiter((x.capacity_hours for x in ls), dtype=np.float64, count=len(ls))
        l_res = np.fromiter((x.reserved_hours for x in ls), dtype=np.float64, count=len(ls))
        l_price = np.fromiter((x.price_per_hour for x in ls), dtype=np.float64, count=len(ls))
        l_month -= h0
        keep = (l_month >= 0) & (l_month < months) & (((declared[l_site] >> l_proc) & 1) == 1)
        l_site, l_proc, l_month = l_site[keep], l_proc[keep], l_month[keep]
        # Capacity rounds DOWN to whole hours (loads round up): see the module docstring.
        free[l_site, l_proc, l_month] = free_whole_hours(l_cap[keep], l_res[keep])
        price[l_site, l_proc, l_month] = l_price[keep]
        listed[l_site, l_proc, l_month] = True

    cert_ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(n_certs, out=cert_ptr[1:])
    cert_arr = np.array(certs, dtype=np.int64).reshape(-1, 4)
    return SiteTable(
        h0=h0,
        months=months,
        site_ids=[s.id for s in snapshot.sites],
        cdmo_ids=list(cdmo_idx),
        cc=cc,
        cdmo=cdmo,
        region=region,
        declared=declared,
        fitq=fitq,
        free=free,
        price=price,
        cert_ptr=cert_ptr,
        cert_kind=cert_arr[:, 0].astype(np.int32),
        cert_cls=cert_arr[:, 1].astype(np.uint32),
        cert_first=cert_arr[:, 2],
        cert_last=cert_arr[:, 3],
        listed=listed,
    )


def encode(
    snapshot: MarketSnapshot,
    params: RunParams,
    site_table: SiteTable | None = None,
    stop: Callable[[], bool] | None = None,
) -> Encoded:
    """Arrays for the kernels; raises SnapshotError for what pydantic cannot check alone.

    ``site_table``: the snapshot's ``encode_sites`` (e.g. cached for its market version); encoded
    here when not given. ``stop()`` is asked every ``STOP_EVERY`` sites and projects
    (``matcher.control.Stopped``: the Python loops over 100000 projects take seconds).
    """
    notes: list[str] = []
    projects = snapshot.projects
    if projects:
        h0 = min(month_index(p.window_start) for p in projects)
        h1 = max(month_index(p.window_end) for p in projects)
    else:
        h0 = h1 = month_index(f"{snapshot.as_of.year:04d}-{snapshot.as_of.month:02d}")
    months = h1 - h0 + 1 if projects else 0
    if months > MAX_HORIZON_MONTHS:
        raise SnapshotError(
            f"project windows span {months} months ({month_name(h0)} to {month_name(h1)}); "
            f"at most {MAX_HORIZON_MONTHS} are supported"
        )
    proj_idx = {p.id: i for i, p in enumerate(projects)}
    site_idx = {s.id: i for i, s in enumerate(snapshot.sites)}
    for kind, proposals in (("previous", snapshot.previous), ("pinned", snapshot.pinned)):
        seen: set[str] = set()
        for prop in proposals:
            if prop.project_id in seen:
                raise SnapshotError(f"two {kind} proposals for project {prop.project_id}")
            seen.add(prop.project_id)

    if site_table is None:
        span = listing_span(snapshot)[1]
        site_table = encode_sites(snapshot, None if span <= MAX_SITE_MONTHS else (h0, months), stop)
    table = site_table
    cdmo_ids = table.cdmo_ids
    cdmo_idx = table.cdmo_index

    def proposal_sites(proposals, label: str) -> dict[int, tuple[int, int]]:
        out = {}
        for prop in proposals:
            j = proj_idx[prop.project_id]
            second = -1
            if prop.second_site_id is not None:
                if projects[j].second_source_required:
                    second = site_idx[prop.second_site_id]
                else:
                    notes.append(
                        f"{label} proposal for {prop.project_id} names a second site but the "
                        "project needs no second source: ignored"
                    )
            out[j] = (site_idx[prop.site_id], second)
        return out

    prev = proposal_sites(snapshot.previous, "previous")
    pinned = proposal_sites(snapshot.pinned, "pinned")

    w = params.weights
    n_rows = sum(2 if p.second_source_required else 1 for p in projects)
    row_project = np.empty(n_rows, dtype=np.int32)
    row_role = np.empty(n_rows, dtype=np.int8)
    row_share = np.empty(n_rows, dtype=np.float64)
    project_rows = np.full((len(projects), 2), -1, dtype=np.int32)
    group = np.empty(n_rows, dtype=np.int32)
    req = np.empty(n_rows, dtype=np.int64)
    tmask = np.empty(n_rows, dtype=np.int64)
    budget = np.empty(n_rows, dtype=np.float64)
    prio = np.empty(n_rows, dtype=np.float64)
    prev_site = np.full(n_rows, -1, dtype=np.int32)
    force = np.full((n_rows, 2), -1, dtype=np.int32)
    alt = np.zeros(n_rows, dtype=np.bool_)
    excl_lists: list[list[int]] = []
    groups: dict[tuple[int, int, int], int] = {}
    # Loads, flattened: one record per (row, process) and its hours.
    ld_row: list[int] = []
    ld_off: list[int] = []
    ld_len: list[int] = []
    ld_hours: list[float] = []

    r = 0
    for j, p in enumerate(projects):
        if stop is not None and j % STOP_EVERY == 0 and stop():
            raise Stopped("encoding stopped")
        m0 = month_index(p.window_start) - h0
        m1 = month_index(p.window_end) - h0
        key = (CAT_IDX[p.category] * N_CLASSES + CLS_IDX[p.device_class], m0, m1)
        g = groups.setdefault(key, len(groups))
        certs = sum(1 << CERT_IDX[c] for c in set(p.required_certifications))
        mkts = sum(1 << REGION_IDX[m] for m in set(p.target_markets))
        gated = sum(
            1 << REGION_IDX[m] for m in set(p.target_markets) if m in MARKET_ACCESS_CERTIFICATE
        )
        procs = sum(1 << PROC_IDX[ld.process] for ld in p.loads)
        word = certs | (gated << MKT_SHIFT) | (procs << PROC_SHIFT)
        excluded = sorted({cdmo_idx[c] for c in p.excluded_cdmo_ids if c in cdmo_idx})
        shares = source_shares(p.second_source_required, p.second_source_share)
        for role, share in enumerate(shares):
            row_project[r] = j
            row_role[r] = role
            row_share[r] = share
            project_rows[j, role] = r
            group[r] = g
            req[r] = word
            tmask[r] = mkts
            # Each source alone must be within the whole ceiling; the blended cost of the two
            # is bounded by a side resource (matcher.pairs).
            budget[r] = p.budget_ceiling if p.budget_ceiling is not None else np.inf
            prio[r] = p.priority
            alt[r] = p.second_source_required
            if j in prev:
                prev_site[r] = prev[j][role]
                force[r, 1] = prev[j][role]
            if j in pinned:
                force[r, 0] = pinned[j][role]
            excl_lists.append(excluded)
            for ld in p.loads:
                ld_row.append(r)
                ld_off.append(PROC_IDX[ld.process] * months + m0)
                ld_len.append(len(ld.monthly_hours))
                ld_hours.extend(ld.monthly_hours)
            r += 1

    # Entries: one per (row, process, month) with a positive load, sorted by offset so that a
    # row walks each site's arrays forwards.
    lens = np.asarray(ld_len, dtype=np.int64)
    e_row = np.repeat(np.asarray(ld_row, dtype=np.int64), lens)
    first = np.repeat(np.cumsum(lens) - lens, lens)
    e_off = np.repeat(np.asarray(ld_off, dtype=np.int64), lens) + np.arange(len(e_row)) - first
    e_raw = np.asarray(ld_hours, dtype=np.float64)
    e_share = row_share[e_row]
    e_hours = e_raw * e_share
    keep = e_hours > 0
    e_row, e_off, e_hours = e_row[keep], e_off[keep], e_hours[keep]
    e_raw, e_share = e_raw[keep], e_share[keep]
    order = np.lexsort((e_off, e_row))
    e_row, e_off, e_hours = e_row[order], e_off[order], e_hours[order]
    ent_ptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(e_row, minlength=n_rows), out=ent_ptr[1:])
    # Loads round UP to whole hours (capacity rounds down): the one rule, whole_hours.
    e_units = whole_hours(e_raw[order], e_share[order])

    excl_ptr, excl = _csr(excl_lists, np.int32)
    grp = np.array(list(groups), dtype=np.int64).reshape(-1, 3)
    a = row_share * w.priority * prio
    rows = RowArrays(
        group=group,
        req=req.astype(np.uint32),
        tmask=tmask.astype(np.uint32),
        excl_ptr=excl_ptr,
        excl=excl,
        ent_ptr=ent_ptr,
        ent_off=e_off.astype(np.int32),
        ent_units=e_units,
        ent_hours=e_hours,
        budget=budget,
        a=a,
        b=a * w.fit,
        stab=row_share * w.stability,
        prev=prev_site,
        force=force,
        alt=alt,
        grp_cc=grp[:, 0].astype(np.int32),
        grp_m0=grp[:, 1].astype(np.int32),
        grp_m1=grp[:, 2].astype(np.int32),
    )
    sites = table.over(h0, months)
    n_words = int(table.cc_counts[rows.grp_cc].sum())
    if n_words > MAX_GROUP_WORDS:
        raise SnapshotError(
            f"{len(groups)} distinct (category, class, window) combinations over "
            f"{sites.n_sites} sites need {n_words} site words; at most {MAX_GROUP_WORDS}"
        )
    forbidden = np.array(
        [
            (int(r), site_idx[pair.site_id])
            for pair in snapshot.forbidden
            if pair.project_id in proj_idx and pair.site_id in site_idx
            for r in project_rows[proj_idx[pair.project_id]]
            if r >= 0
        ],
        dtype=np.int64,
    ).reshape(-1, 2)
    return Encoded(
        sites=sites,
        rows=rows,
        horizon_start=h0,
        n_months=months,
        project_ids=[p.id for p in projects],
        site_ids=[s.id for s in snapshot.sites],
        cdmo_ids=cdmo_ids,
        row_project=row_project,
        row_role=row_role,
        row_share=row_share,
        project_rows=project_rows,
        pinned=pinned,
        project_budget=np.array(
            [np.inf if p.budget_ceiling is None else p.budget_ceiling for p in projects],
            dtype=np.float64,
        ),
        project_apart_region=np.array(
            [p.second_source_separation == SecondSourceSeparation.REGION for p in projects],
            dtype=np.bool_,
        ),
        notes=notes,
        forbidden=forbidden,
    )
