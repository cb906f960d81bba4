"""From a MarketSnapshot to the generic AssignmentModel, and what is needed to map back.

``encode`` turns the snapshot into contiguous arrays (validating what pydantic cannot, once);
the kernels then score every row x site pair; ``build_problem`` turns the candidate lists
into an ``AssignmentModel``:

* a *row* (model item) is a project, or, for a project that needs a second source, one of two
  linked rows: the primary carrying ``1 - second_source_share`` of every load, of the value
  and of the stability bonus, the second carrying ``second_source_share``; the model's
  ``bin_group`` is the CDMO, so the two are never at the same CDMO;
* resources are (site, process, month) with capacity = free hours rounded DOWN to whole
  hours, and every load is rounded UP to whole hours (after the share is applied), so any
  model-feasible answer is feasible in real hours (up to ``HOURS_TOL`` of float noise);
* months are horizon-relative: the horizon runs from the earliest window start to the
  latest window end among the projects; listings outside it are ignored.

Decisions that are made here and nowhere else:

* fit in [0, 1] = ``FIT_QUALITY * quality + FIT_MARKET * [site region is a target market]``,
  quality = 0.5 on-time rate + 0.25 / (1 + inspection findings)
  + 0.25 max(0, 1 - lead time weeks / 26);
* value = round(share * priority_w * priority * (1 + fit_w * fit) - cost_w * cost)
  (+ share * stability_w at the previous proposal's site). Rewarding the previous site by
  ``stability_w`` is the same, up to the constant ``stability_w x (previously placed rows)``,
  as a ``stability_w`` penalty for every row that moves away from (or loses) its proposal;
* budget: each source's full-volume cost must be within the ceiling (compared as the row's
  share of cost against its share of budget), which keeps any primary / second blend within
  the ceiling too;
* a site runs a process when it lists the process in ``Site.processes`` AND has at least one
  listing for it inside the horizon; a listing for a process the site does not declare is
  ignored; a month with no listing has no free capacity.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from matcher import kernels
from matcher.certificates import renewal_chains
from matcher.kernels import MKT_SHIFT, N_CLASSES, PROC_SHIFT, RowArrays, Scored, SiteArrays
from matcher.model import NONE, AssignmentModel, concat_ranges
from matcher.pairs import N_REGIONS, merge_uses, side_uses
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
assert len(CLASSES) == N_CLASSES and len(CATEGORIES) * N_CLASSES <= 32
assert len(REGIONS) == N_REGIONS
assert len(CERT_KINDS) <= MKT_SHIFT and len(REGIONS) <= PROC_SHIFT - MKT_SHIFT and N_PROC <= 16

FIT_QUALITY = 0.75
FIT_MARKET = 0.25
# Float noise tolerated when rounding hours to whole hours (loads up, capacity down).
HOURS_TOL = 1e-6
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

    @cached_property
    def words(self) -> kernels.GroupWords:
        """Sites serving each row group, computed once and reused by every scoring pass."""
        return kernels.group_words(self.sites, self.rows)

    @cached_property
    def month_names(self) -> list[str]:
        """``YYYY-MM`` of every horizon month."""
        return [month_name(self.horizon_start + m) for m in range(self.n_months)]


@dataclass(frozen=True)
class MarketProblem:
    model: AssignmentModel
    enc: Encoded
    scored: Scored
    cand_cost: np.ndarray  # float64 [n_cand], cost in currency at the candidate's site
    res_key: np.ndarray  # int64 [n_res]: site * (N_PROC * months) + process * months + month
    notes: list[str]
    timings: dict[str, float]
    stats: dict[str, float]
    params: RunParams

    def resource(self, r: int) -> tuple[int, int, int]:
        """(site, process, horizon month) of resource ``r``."""
        t = self.enc.n_months
        key = int(self.res_key[r])
        return key // (N_PROC * t), (key // t) % N_PROC, key % t


def _csr(lists: list[list[int]], dtype: type) -> tuple[np.ndarray, np.ndarray]:
    flat: np.ndarray
    ptr = np.zeros(len(lists) + 1, dtype=np.int64)
    np.cumsum([len(x) for x in lists], out=ptr[1:])
    flat = np.fromiter((v for x in lists for v in x), dtype=dtype, count=int(ptr[-1]))
    return ptr, flat


def _encode_sites(snapshot: MarketSnapshot, h0: int, months: int) -> tuple[SiteArrays, list]:
    site_idx = {s.id: i for i, s in enumerate(snapshot.sites)}
    n = len(snapshot.sites)
    cdmo_idx: dict[str, int] = {}
    cdmo = np.array(
        [cdmo_idx.setdefault(s.cdmo_id, len(cdmo_idx)) for s in snapshot.sites], dtype=np.int32
    )
    cc = np.zeros(n, dtype=np.uint32)
    region = np.zeros(n, dtype=np.int64)
    declared = np.zeros(n, dtype=np.int64)
    fitq = np.zeros(n, dtype=np.float64)
    certs: list[list[tuple[int, int, int, int]]] = []
    for i, s in enumerate(snapshot.sites):
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
        certs.append(
            [
                (
                    CERT_IDX[kind],
                    sum(1 << CLS_IDX[k] for k in scope),
                    min(max(_first_month(valid_from) - h0, 0), months),
                    min(max(_last_month(valid_until) - h0, -1), months - 1),
                )
                for kind, scope, valid_from, valid_until in renewal_chains(s.certifications)
            ]
        )

    pt = N_PROC * months
    free = np.zeros((n, pt), dtype=np.int32)
    price = np.zeros((n, pt), dtype=np.float64)
    listed = np.zeros(n, dtype=np.int64)
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
        off = l_proc * months + l_month
        # Capacity rounds DOWN to whole hours (loads round up): see the module docstring.
        free[l_site, off] = np.floor(np.maximum(l_cap[keep] - l_res[keep], 0.0) + HOURS_TOL)
        price[l_site, off] = l_price[keep]
        np.bitwise_or.at(listed, l_site, np.left_shift(1, l_proc))
    word0 = ((declared & listed) << PROC_SHIFT) | (np.int64(1) << (MKT_SHIFT + region))

    cert_ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum([len(c) for c in certs], out=cert_ptr[1:])
    flat = [c for cs in certs for c in cs]
    cert_arr = np.array(flat, dtype=np.int64).reshape(-1, 4)
    access = np.full(len(CERT_KINDS), -1, dtype=np.int32)
    for reg, kind in MARKET_ACCESS_CERTIFICATE.items():
        access[CERT_IDX[kind]] = REGION_IDX[reg]
    sites = SiteArrays(
        cc=cc,
        cdmo=cdmo,
        region_bit=(np.int64(1) << region).astype(np.uint32),
        word0=word0.astype(np.uint32),
        fitq=fitq,
        free=free,
        price=price,
        cert_ptr=cert_ptr,
        cert_kind=cert_arr[:, 0].astype(np.int32),
        cert_cls=cert_arr[:, 1].astype(np.uint32),
        cert_first=cert_arr[:, 2].astype(np.int32),
        cert_last=cert_arr[:, 3].astype(np.int32),
        access_region=access,
    )
    return sites, list(cdmo_idx)


def encode(snapshot: MarketSnapshot, params: RunParams) -> Encoded:
    """Arrays for the kernels; raises SnapshotError for what pydantic cannot check alone."""
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

    sites, cdmo_ids = _encode_sites(snapshot, h0, months)
    cdmo_idx = {c: i for i, c in enumerate(cdmo_ids)}

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
        shares = (
            (1.0 - p.second_source_share, p.second_source_share)
            if p.second_source_required
            else (1.0,)
        )
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
    e_hours = np.asarray(ld_hours, dtype=np.float64) * row_share[e_row]
    keep = e_hours > 0
    e_row, e_off, e_hours = e_row[keep], e_off[keep], e_hours[keep]
    order = np.lexsort((e_off, e_row))
    e_row, e_off, e_hours = e_row[order], e_off[order], e_hours[order]
    ent_ptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(e_row, minlength=n_rows), out=ent_ptr[1:])
    # Loads round UP to whole hours (capacity rounds down).
    e_units = np.maximum(np.ceil(e_hours - HOURS_TOL), 0).astype(np.int64)

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
    cc_count = np.array(
        [np.count_nonzero((sites.cc >> np.uint32(c)) & np.uint32(1)) for c in range(32)]
    )
    n_words = int(cc_count[rows.grp_cc].sum())
    if n_words > MAX_GROUP_WORDS:
        raise SnapshotError(
            f"{len(groups)} distinct (category, class, window) combinations over "
            f"{sites.n_sites} sites need {n_words} site words; at most {MAX_GROUP_WORDS}"
        )
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
    )


def find_candidates(
    model_ptr: np.ndarray, cand_site: np.ndarray, want: np.ndarray
) -> np.ndarray:
    """Candidate index of site ``want[i]`` in row i's list, or NONE."""
    out = np.full(len(want), NONE, dtype=np.int64)
    cand_row = np.repeat(np.arange(len(want)), np.diff(model_ptr))
    hit = np.flatnonzero((want[cand_row] >= 0) & (cand_site == want[cand_row]))
    out[cand_row[hit]] = hit
    return out


def build_problem(snapshot: MarketSnapshot, params: RunParams) -> MarketProblem:
    """Encode, score all pairs with the kernels, and build the AssignmentModel."""
    t0 = time.perf_counter()
    enc = encode(snapshot, params)
    t1 = time.perf_counter()
    scored = kernels.score_pairs(
        enc.sites,
        enc.rows,
        enc.words,
        k=params.candidates_per_project,
        w_cost=params.weights.cost,
        fit_market=FIT_MARKET,
    )
    t2 = time.perf_counter()
    problem = _assemble(enc, scored, params)
    problem.timings.update({"encode": t1 - t0, "kernels": t2 - t1})
    return problem


def _assemble(enc: Encoded, scored: Scored, params: RunParams) -> MarketProblem:
    """The AssignmentModel of ``scored``'s candidate lists."""
    t2 = time.perf_counter()
    sites, rows = enc.sites, enc.rows

    # Resource uses: every candidate uses its row's positive whole-hour loads at its site.
    n_rows = rows.n_rows
    pos = rows.ent_units > 0
    pos_ptr = np.zeros(n_rows + 1, dtype=np.int64)
    ent_row = np.repeat(np.arange(n_rows), np.diff(rows.ent_ptr))
    np.cumsum(np.bincount(ent_row[pos], minlength=n_rows), out=pos_ptr[1:])
    pos_ent = np.flatnonzero(pos)
    cand_row = np.repeat(np.arange(n_rows), np.diff(scored.cand_ptr))
    use_len = np.diff(pos_ptr)[cand_row]
    use_ptr = np.zeros(len(cand_row) + 1, dtype=np.int64)
    np.cumsum(use_len, out=use_ptr[1:])
    use_ent = pos_ent[concat_ranges(pos_ptr[cand_row], pos_ptr[cand_row + 1])]
    pt = N_PROC * enc.n_months
    keys = np.repeat(scored.cand_site.astype(np.int64), use_len) * pt + rows.ent_off[use_ent]
    used = np.zeros(sites.n_sites * pt, dtype=np.bool_)
    used[keys] = True
    res_key = np.flatnonzero(used)
    res_id = np.full(len(used), -1, dtype=np.int64)
    res_id[res_key] = np.arange(len(res_key))
    capacity = sites.free.reshape(-1)[res_key].astype(np.int64)
    use_res = res_id[keys].astype(np.int32)
    use_amt = rows.ent_units[use_ent]
    # The rules joining two sources (separation, blended budget) as side resources.
    side_base = sites.n_sites * pt
    side_cand, side_key, side_amt, side_cap = side_uses(
        enc.project_rows, enc.row_project, enc.project_apart_region, enc.project_budget,
        np.log2(sites.region_bit.astype(np.float64)).astype(np.int64),
        scored.cand_ptr, scored.cand_site, scored.cand_cost, side_base,
    )  # fmt: skip
    if len(side_cap):
        side_keys = np.array(sorted(side_cap), dtype=np.int64)
        side_id = len(res_key) + np.searchsorted(side_keys, side_key)
        capacity = np.concatenate(
            [capacity, np.array([side_cap[k] for k in side_keys.tolist()], dtype=np.int64)]
        )
        res_key = np.concatenate([res_key, side_keys])
        use_ptr, use_res64, use_amt = merge_uses(
            use_ptr, use_res.astype(np.int64), use_amt, side_cand, side_id, side_amt
        )
        use_res = use_res64.astype(np.int32)

    partner = np.full(n_rows, NONE, dtype=np.int32)
    two = enc.project_rows[:, 1] >= 0
    partner[enc.project_rows[two, 0]] = enc.project_rows[two, 1]
    partner[enc.project_rows[two, 1]] = enc.project_rows[two, 0]

    hint = find_candidates(scored.cand_ptr, scored.cand_site, rows.prev.astype(np.int64))
    fixed, pin_notes = _accept_pins(enc, scored, capacity, use_ptr, use_res, use_amt)
    notes = enc.notes + pin_notes

    model = AssignmentModel(
        capacity=capacity,
        cand_ptr=scored.cand_ptr,
        cand_bin=scored.cand_site,
        cand_value=scored.cand_value,
        use_ptr=use_ptr,
        use_res=use_res,
        use_amt=use_amt,
        must_assign=np.zeros(n_rows, dtype=np.bool_),
        partner=partner,
        bin_group=sites.cdmo.astype(np.int32),
        fixed=fixed,
        hint=hint,
        outside_best=scored.outside_best,
    )
    t3 = time.perf_counter()
    counts = scored.counts
    stats = {
        "projects": float(len(enc.project_ids)),
        "sites": float(sites.n_sites),
        "months": float(enc.n_months),
        "pairs_evaluated": float(n_rows) * sites.n_sites,
        "eligible_pairs": float(counts[:, kernels.ELIGIBLE].sum()),
        "candidates": float(model.n_cand),
        "items": float(n_rows),
        "resources": float(model.n_res),
        "resource_uses": float(len(use_res)),
        "row_groups": float(len(rows.grp_cc)),
    }
    return MarketProblem(
        model=model,
        enc=enc,
        scored=scored,
        cand_cost=scored.cand_cost,
        res_key=res_key.astype(np.int64),
        notes=notes,
        timings={"model": t3 - t2},
        stats=stats,
        params=params,
    )


def _site_prices(problem: MarketProblem, prices: np.ndarray) -> np.ndarray:
    """Model resource prices laid out as the kernels' [site, process x month] array."""
    dual = np.zeros(problem.enc.sites.free.size, dtype=np.float64)
    site_res = problem.res_key < dual.size  # side resources (matcher.pairs) have no site
    dual[problem.res_key[site_res]] = prices[site_res]
    return dual.reshape(problem.enc.sites.free.shape)


def _true_values(enc: Encoded, params: RunParams, rows_: np.ndarray, sites_: np.ndarray,
                 costs: np.ndarray) -> np.ndarray:
    """The kernels' value formula for given pairs (same operations, same rounding)."""
    r, st = enc.rows, enc.sites
    fit = st.fitq[sites_] + np.where((st.region_bit[sites_] & r.tmask[rows_]) != 0,
                                     FIT_MARKET, 0.0)
    xv = r.a[rows_] + r.b[rows_] * fit - params.weights.cost * costs
    xv = np.where(sites_ == r.prev[rows_], xv + r.stab[rows_], xv)
    return np.floor(np.clip(xv, -kernels.VALUE_CLIP, kernels.VALUE_CLIP) + 0.5).astype(np.int64)


def extend_problem(problem: MarketProblem, prices: np.ndarray) -> tuple[MarketProblem, int]:
    """Column generation: add each row's best sites by *reduced* value under ``prices`` (per
    model resource), so rows whose top sites by value are full get sites with room.

    Candidate lists only grow, so the old ``outside_best`` still bounds every pair left out.
    Returns the new problem and the number of candidates added.
    """
    enc, params, old = problem.enc, problem.params, problem.scored
    priced = kernels.score_pairs(
        enc.sites, enc.rows, enc.words,
        k=params.candidates_per_project, w_cost=params.weights.cost, fit_market=FIT_MARKET,
        dual=_site_prices(problem, prices),
    )
    n_rows = enc.rows.n_rows
    old_row = np.repeat(np.arange(n_rows), np.diff(old.cand_ptr))
    new_row = np.repeat(np.arange(n_rows), np.diff(priced.cand_ptr))
    width = np.int64(enc.sites.n_sites)
    known = np.isin(new_row * width + priced.cand_site, old_row * width + old.cand_site)
    add = ~known
    added = int(add.sum())
    if added == 0:
        return problem, 0
    rows_ = np.concatenate([old_row, new_row[add]])
    sites_ = np.concatenate([old.cand_site, priced.cand_site[add]])
    costs = np.concatenate([old.cand_cost, priced.cand_cost[add]])
    values = np.concatenate([old.cand_value, _true_values(enc, params, new_row[add],
                                                          priced.cand_site[add],
                                                          priced.cand_cost[add])])
    order = np.lexsort((sites_, -values, rows_))  # per row: value desc, then site asc
    ptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows_, minlength=n_rows), out=ptr[1:])
    merged = Scored(ptr, sites_[order].astype(np.int32), values[order], costs[order],
                    old.counts, old.outside_best)
    extended = _assemble(enc, merged, params)
    extended.timings.update(problem.timings)
    extended.stats["priced_candidates"] = problem.stats.get("priced_candidates", 0) + added
    return extended, added


def add_candidates(
    problem: MarketProblem, rows_: np.ndarray, sites_: np.ndarray, costs: np.ndarray
) -> MarketProblem:
    """The problem with eligible (row, site) pairs of the given costs added to the candidate
    lists (pairs already there are skipped): ``matcher.complete`` uses it for placements found
    outside the lists. Values come from the one formula (``_true_values``)."""
    enc, params, old = problem.enc, problem.params, problem.scored
    n_rows = enc.rows.n_rows
    old_row = np.repeat(np.arange(n_rows), np.diff(old.cand_ptr))
    width = np.int64(enc.sites.n_sites)
    rows_ = np.asarray(rows_, dtype=np.int64)
    sites_ = np.asarray(sites_, dtype=np.int64)
    new = ~np.isin(rows_ * width + sites_, old_row * width + old.cand_site)
    rows_, sites_, costs = rows_[new], sites_[new], np.asarray(costs, dtype=np.float64)[new]
    if rows_.size == 0:
        return problem
    values = _true_values(enc, params, rows_, sites_, costs)
    all_rows = np.concatenate([old_row, rows_])
    all_sites = np.concatenate([old.cand_site, sites_])
    all_costs = np.concatenate([old.cand_cost, costs])
    all_values = np.concatenate([old.cand_value, values])
    order = np.lexsort((all_sites, -all_values, all_rows))
    ptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(all_rows, minlength=n_rows), out=ptr[1:])
    merged = Scored(ptr, all_sites[order].astype(np.int32), all_values[order],
                    all_costs[order], old.counts, old.outside_best)
    extended = _assemble(enc, merged, params)
    extended.timings.update(problem.timings)
    extended.stats.update({k: v for k, v in problem.stats.items() if k not in extended.stats})
    return extended


def market_bound(problem: MarketProblem, prices: np.ndarray) -> int:
    """Lagrangian bound over *every* eligible pair of the market, not only the candidates:

        sum of price x capacity + sum over rows of max(0, best reduced value of the row),

    one kernel pass with the prices as duals (k=1: the best pair and the best left out).
    Second-source links and pins are relaxed, which only loosens it. Reduced values are
    rounded to the nearest integer by the kernel, hence the half point per row.
    """
    enc, params = problem.enc, problem.params
    priced = kernels.score_pairs(
        enc.sites, enc.rows, enc.words, k=1,
        w_cost=params.weights.cost, fit_market=FIT_MARKET,
        dual=_site_prices(problem, prices),
    )
    best = priced.outside_best.astype(np.float64)
    has = np.diff(priced.cand_ptr) > 0
    if has.any():
        top = np.maximum.reduceat(priced.cand_value, priced.cand_ptr[:-1][has])
        best[has] = np.maximum(best[has], top)
    rows_total = float(np.maximum(best + 0.5, 0.0).sum())
    return int(np.floor(float(prices @ problem.model.capacity) + rows_total + 1e-6))


def _accept_pins(
    enc: Encoded,
    scored: Scored,
    capacity: np.ndarray,
    use_ptr: np.ndarray,
    use_res: np.ndarray,
    use_amt: np.ndarray,
) -> tuple[np.ndarray, list[str]]:
    """``fixed`` per row: pins are honoured, in snapshot order, while they stay feasible.

    A pin whose site is not eligible, of a second-source project without its second site,
    whose two sources share a CDMO, or that no longer fits next to the pins accepted before
    it is not forced (the model could be infeasible), and gets a note instead.
    """
    n_rows = enc.rows.n_rows
    fixed = np.full(n_rows, NONE, dtype=np.int64)
    notes: list[str] = []
    if not enc.pinned:
        return fixed, notes
    residual = capacity.copy()
    pin_site = enc.rows.force[:, 0].astype(np.int64)
    pin_cand = find_candidates(scored.cand_ptr, scored.cand_site, pin_site)
    for j, (site, second) in enc.pinned.items():
        pid = enc.project_ids[j]
        rows = [int(r) for r in enc.project_rows[j] if r >= 0]
        wanted = [(r, int(pin_site[r]), int(pin_cand[r])) for r in rows if pin_site[r] >= 0]
        missing = [enc.site_ids[s] for _, s, c in wanted if c == NONE]
        if missing:
            notes.append(f"pin of {pid} to {', '.join(missing)} not forced: site not eligible")
            continue
        if len(rows) == 2 and second < 0:
            # Forcing the primary alone could leave its partner no feasible site at all.
            notes.append(f"pin of {pid} not forced: it needs a second source, pin both sites")
            continue
        if second >= 0 and enc.sites.cdmo[site] == enc.sites.cdmo[second]:
            notes.append(f"pin of {pid} not forced: both sources are at the same CDMO")
            continue
        if (
            second >= 0
            and enc.project_apart_region[j]
            and enc.sites.region_bit[site] == enc.sites.region_bit[second]
        ):
            notes.append(f"pin of {pid} not forced: both sources are in the same region")
            continue
        use = np.concatenate([np.arange(use_ptr[c], use_ptr[c + 1]) for _, _, c in wanted])
        need = np.zeros(len(residual), dtype=np.int64)
        np.add.at(need, use_res[use], use_amt[use])
        if np.any(need > residual):
            notes.append(f"pin of {pid} not forced: it does not fit next to earlier pins")
            continue
        residual -= need
        for r, _, c in wanted:
            fixed[r] = c
    return fixed, notes
