"""Nothing left on the table: a last pass over every eligible site of the whole market.

The solver works on candidate lists (each project's best sites by value, then by reduced
value), so an answer can leave a project unplaced while some eligible site outside its list
still has room for it. ``complete`` closes that: with the capacity the answer leaves free, it
takes the unplaced projects in order of priority and places each one at its best eligible site
(or best pair of sources) of the whole market that fits, if that placement has a positive
value. Capacity only shrinks during the pass, so one pass is enough: when it ends, no unplaced
project fits anywhere as the answer stands (the answer is *maximal*). The answer then gets a
model of its own (``answer_problem``), built from the encoding like any model, so the verifier
checks the placements found outside the candidate lists like any other.

``scan_row`` (one row against every site serving its category and class, with the same rules
and value as the kernels) is shared with ``matcher.explain``, so an explanation is true of
the whole market too.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numba import njit

from matcher import reference
from matcher.control import RunControl, Stopped
from matcher.encode import FIT_MARKET
from matcher.kernels import CERT_FIELD, ELIGIBLE, MKT_FIELD, PROC_FIELD, Scored, pair_value
from matcher.model import NONE
from matcher.pairs import N_REGIONS, budget_capacity, budget_units
from matcher.problem import MarketProblem, assemble

# Projects placed per call of the kernel between two checks of the run control.
CHUNK = 2048


@njit(cache=True)
def scan_row(
    j, free_left, only_fits, w_cost, fit_market,
    site_cdmo, site_rbit, site_fitq, price, gptr, gsite, gword,
    row_group, row_req, row_tmask, excl_ptr, excl, ent_ptr, ent_off, ent_units, ent_hours,
    row_budget, row_a, row_b, row_stab, row_prev,
    out_site, out_value, out_cost, out_fits,
):  # fmt: skip
    """Every site passing row ``j``'s rules (category and class, process, certification,
    market, excluded CDMO, budget of the row alone) with its value, cost and whether its load
    fits in ``free_left`` [site, process x month]; only those that fit when ``only_fits``.
    Returns how many were written."""
    g = row_group[j]
    req = row_req[j]
    r_proc = req & np.uint32(PROC_FIELD)
    r_cert = req & np.uint32(CERT_FIELD)
    r_mkt = req & np.uint32(MKT_FIELD)
    e0 = ent_ptr[j]
    e1 = ent_ptr[j + 1]
    n = 0
    for i in range(gptr[g], gptr[g + 1]):
        w = gword[i]
        if (w & r_proc) != r_proc or (w & r_cert) != r_cert or (w & r_mkt) != r_mkt:
            continue
        s = gsite[i]
        cd = site_cdmo[s]
        excluded = False
        for x in range(excl_ptr[j], excl_ptr[j + 1]):
            if excl[x] == cd:
                excluded = True
                break
        if excluded:
            continue
        fits = True
        for e in range(e0, e1):
            if ent_units[e] > free_left[s, ent_off[e]]:
                fits = False
                break  # most sites an unplaced project is scanned against are full
        if only_fits and not fits:
            continue
        cost = 0.0
        for e in range(e0, e1):
            cost += ent_hours[e] * price[s, ent_off[e]]
        if cost > row_budget[j]:
            continue
        stab = row_stab[j] if s == row_prev[j] else 0.0
        out_site[n] = s
        out_value[n] = pair_value(
            row_a[j], row_b[j], site_fitq[s], (site_rbit[s] & row_tmask[j]) != 0, fit_market,
            w_cost, cost, 0.0, stab,
        )  # fmt: skip
        out_cost[n] = cost
        out_fits[n] = fits
        n += 1
    return n


@njit(cache=True)
def _take(j, s, sign, free_left, ent_ptr, ent_off, ent_units):
    for e in range(ent_ptr[j], ent_ptr[j + 1]):
        free_left[s, ent_off[e]] -= sign * ent_units[e]


@njit(cache=True)
def _best_single(n, sites, values):
    best = -1
    for t in range(n):
        if values[t] > 0 and (
            best < 0
            or values[t] > values[best]
            or (values[t] == values[best] and sites[t] < sites[best])
        ):
            best = t
    return best


@njit(cache=True, inline="always")
def _better(t, u, v, sites):
    """Option t ranks before option u (value desc, then site asc); u < 0 is nothing."""
    return u < 0 or v[t] > v[u] or (v[t] == v[u] and sites[t] < sites[u])


@njit(cache=True)
def _tops(n1, s1, v1, site_cdmo, site_region):
    """Per region (and, in the last slot, over all regions): the best option and the best of a
    CDMO other than that one's. The best second for a primary at CDMO c is then, per slot, the
    first of the two that is not at c."""
    top = np.full((N_REGIONS + 1, 2), -1, np.int64)
    for b in range(n1):
        for slot in (site_region[s1[b]], N_REGIONS):
            t0 = top[slot, 0]
            if _better(b, t0, v1, s1):
                if t0 >= 0 and site_cdmo[s1[t0]] != site_cdmo[s1[b]]:
                    top[slot, 1] = t0
                top[slot, 0] = b
            elif site_cdmo[s1[b]] != site_cdmo[s1[t0]] and _better(b, top[slot, 1], v1, s1):
                top[slot, 1] = b
    return top


@njit(cache=True)
def best_pair(n0, s0, v0, c0, n1, s1, v1, c1, site_cdmo, site_region, apart, cap):
    """Best (primary, second) of two option lists with a positive total value: different
    CDMOs, different regions when ``apart``, blended cost within ``cap`` budget units (< 0:
    no budget). Returns the two positions, or (-1, -1).

    For each primary, the best allowed second ignoring the budget comes from ``_tops`` in a
    few steps; only when that pair is over budget are the seconds scanned in value order."""
    if n0 == 0 or n1 == 0:
        return -1, -1
    top = _tops(n1, s1, v1, site_cdmo, site_region)
    o1 = np.empty(0, np.int64)
    best = np.int64(0)
    ba = -1
    bb = -1
    for a in range(n0):
        ca = site_cdmo[s0[a]]
        ra = site_region[s0[a]]
        b = -1
        for slot in range(N_REGIONS + 1):
            if (apart and (slot == N_REGIONS or slot == ra)) or (not apart and slot < N_REGIONS):
                continue
            for i in range(2):
                t = top[slot, i]
                if t >= 0 and site_cdmo[s1[t]] != ca:
                    if _better(t, b, v1, s1):
                        b = t
                    break
        if b < 0 or v0[a] + v1[b] <= best:
            continue
        if cap >= 0 and budget_units(c0[a]) + budget_units(c1[b]) > cap:
            b = -1
            if o1.shape[0] == 0:
                o1 = np.argsort(-v1[:n1], kind="mergesort")
            for ib in range(n1):
                t = o1[ib]
                if v0[a] + v1[t] <= best:
                    break
                if site_cdmo[s1[t]] == ca or (apart and site_region[s1[t]] == ra):
                    continue
                if budget_units(c0[a]) + budget_units(c1[t]) <= cap:
                    b = t
                    break
            if b < 0:
                continue
        best = v0[a] + v1[b]
        ba = a
        bb = b
    return ba, bb


@njit(cache=True)
def cheapest_pair(n0, s0, v0, c0, n1, s1, v1, c1, site_cdmo, site_region, apart, cap):
    """Least blended cost, in budget units, of a (primary, second) pair of the two option
    lists at different CDMOs (and regions when ``apart``), whatever its value; -1 when no pair
    is allowed at all. Same arguments as ``best_pair`` (values and ``cap`` unused)."""
    if n0 == 0 or n1 == 0:
        return np.int64(-1)
    u0 = np.empty(n0, np.int64)
    for t in range(n0):
        u0[t] = budget_units(c0[t])
    u1 = np.empty(n1, np.int64)
    for t in range(n1):
        u1[t] = budget_units(c1[t])
    o0 = np.argsort(u0, kind="mergesort")
    o1 = np.argsort(u1, kind="mergesort")
    best = np.int64(-1)
    for ia in range(n0):
        a = o0[ia]
        if best >= 0 and u0[a] + u1[o1[0]] >= best:
            break
        for ib in range(n1):
            b = o1[ib]
            if best >= 0 and u0[a] + u1[b] >= best:
                break
            if site_cdmo[s1[b]] == site_cdmo[s0[a]]:
                continue
            if apart and site_region[s1[b]] == site_region[s0[a]]:
                continue
            best = u0[a] + u1[b]
            break
    return best


@njit(cache=True, nogil=True)
def _complete_kernel(
    projects, project_rows, apart, budget_cap, site_region, free_left, placed_site, placed_cost,
    w_cost,
    fit_market, site_cdmo, site_rbit, site_fitq, price, gptr, gsite, gword,
    row_group, row_req, row_tmask, excl_ptr, excl, ent_ptr, ent_off, ent_units, ent_hours,
    row_budget, row_a, row_b, row_stab, row_prev,
):  # fmt: skip
    """Place each of ``projects`` (in order) where it fits best; writes ``placed_site`` per
    row and takes the capacity from ``free_left``. Returns the number placed."""
    width = 1  # the longest site list of a group: no row has more options
    for g in range(gptr.shape[0] - 1):
        width = max(width, gptr[g + 1] - gptr[g])
    s0 = np.empty(width, np.int32)
    v0 = np.empty(width, np.int64)
    c0 = np.empty(width, np.float64)
    f0 = np.empty(width, np.bool_)
    s1 = np.empty(width, np.int32)
    v1 = np.empty(width, np.int64)
    c1 = np.empty(width, np.float64)
    f1 = np.empty(width, np.bool_)
    done = 0
    for j in projects:
        r0 = project_rows[j, 0]
        r1 = project_rows[j, 1]
        n0 = scan_row(
            r0, free_left, True, w_cost, fit_market, site_cdmo, site_rbit, site_fitq, price,
            gptr, gsite, gword, row_group, row_req, row_tmask, excl_ptr, excl, ent_ptr,
            ent_off, ent_units, ent_hours, row_budget, row_a, row_b, row_stab, row_prev,
            s0, v0, c0, f0,
        )  # fmt: skip
        if n0 == 0:
            continue
        if r1 < 0:
            a = _best_single(n0, s0, v0)
            if a >= 0:
                placed_site[r0] = s0[a]
                placed_cost[r0] = c0[a]
                _take(r0, s0[a], 1, free_left, ent_ptr, ent_off, ent_units)
                done += 1
            continue
        n1 = scan_row(
            r1, free_left, True, w_cost, fit_market, site_cdmo, site_rbit, site_fitq, price,
            gptr, gsite, gword, row_group, row_req, row_tmask, excl_ptr, excl, ent_ptr,
            ent_off, ent_units, ent_hours, row_budget, row_a, row_b, row_stab, row_prev,
            s1, v1, c1, f1,
        )  # fmt: skip
        a, b = best_pair(
            n0, s0, v0, c0, n1, s1, v1, c1, site_cdmo, site_region, apart[j], budget_cap[j]
        )
        if a >= 0:
            placed_site[r0] = s0[a]
            placed_site[r1] = s1[b]
            placed_cost[r0] = c0[a]
            placed_cost[r1] = c1[b]
            _take(r0, s0[a], 1, free_left, ent_ptr, ent_off, ent_units)
            _take(r1, s1[b], 1, free_left, ent_ptr, ent_off, ent_units)
            done += 1
    return done


def scan_args(enc, free_left: np.ndarray, w_cost: float, fit_market: float) -> tuple:
    """The arrays ``scan_row`` takes after its first three arguments, in order."""
    st, r, w = enc.sites, enc.rows, enc.words
    return (
        float(w_cost), float(fit_market), st.cdmo, st.region_bit, st.fitq, st.price,
        w.ptr, w.site, w.word, r.group, r.req, r.tmask, r.excl_ptr, r.excl, r.ent_ptr,
        r.ent_off, r.ent_units, r.ent_hours, r.budget, r.a, r.b, r.stab, r.prev,
    )  # fmt: skip


def free_left(enc, row_site: np.ndarray) -> np.ndarray:
    """Free whole hours [site, process x month] once every row placed at ``row_site[row]``
    (or -1) takes its load."""
    left = enc.sites.free.astype(np.int64)
    r = enc.rows
    placed = np.flatnonzero(row_site >= 0)
    if placed.size:
        lens = r.ent_ptr[placed + 1] - r.ent_ptr[placed]
        idx = np.repeat(r.ent_ptr[placed] - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())
        np.subtract.at(left, (np.repeat(row_site[placed], lens), r.ent_off[idx]), r.ent_units[idx])
    return left


def pair_arrays(enc) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(apart_region per project, blended-budget cap in units per project or -1, site region)."""
    budget = enc.project_budget
    finite = np.isfinite(budget)
    cap = np.full(len(budget), -1, dtype=np.int64)
    cap[finite] = budget_capacity(budget[finite])
    region = np.log2(enc.sites.region_bit.astype(np.float64)).astype(np.int64)
    return enc.project_apart_region.astype(np.bool_), cap, region


def row_sites(problem, choice: np.ndarray) -> np.ndarray:
    """Site of every row in ``choice`` (candidate indices), or -1."""
    out = np.full(len(choice), -1, dtype=np.int64)
    placed = choice != NONE
    out[placed] = problem.model.cand_bin[choice[placed]]
    return out


def answer_problem(
    problem: MarketProblem,
    choice: np.ndarray,
    site: np.ndarray,
    cost: np.ndarray,
    control: RunControl | None = None,
) -> tuple[MarketProblem, np.ndarray]:
    """The model of the answer alone, and the answer in it: each placed row keeps one
    candidate, its site (``site[row]``, -1 when unplaced). Built by ``assemble`` from the
    encoding, like any model, so the verifier checks every placement (those found outside the
    candidate lists included) against the capacities, pins and pair rules, at a fraction of
    the cost of rebuilding the whole candidate model. ``outside_best`` keeps every row's best
    candidate value, so a bound over it still holds. A cancel of ``control`` stops the
    assembly (``matcher.control.Stopped``)."""
    enc, params, old = problem.enc, problem.params, problem.model
    placed = site >= 0
    rows_ = np.flatnonzero(placed)
    was = choice[rows_] != NONE
    values = np.empty(len(rows_), dtype=np.int64)
    costs = np.empty(len(rows_), dtype=np.float64)
    values[was] = old.cand_value[choice[rows_[was]]]
    costs[was] = problem.cand_cost[choice[rows_[was]]]
    new = rows_[~was]
    costs[~was] = cost[new]
    values[~was] = reference.pair_values(
        enc.sites, enc.rows, new, site[new], cost[new], params.weights.cost, FIT_MARKET
    )
    best = old.outside_best.copy()
    has = np.diff(old.cand_ptr) > 0
    if has.any():
        top = np.maximum.reduceat(old.cand_value, old.cand_ptr[:-1][has])
        best[has] = np.maximum(best[has], top)
    ptr = np.zeros(enc.rows.n_rows + 1, dtype=np.int64)
    np.cumsum(placed, out=ptr[1:])
    scored = Scored(ptr, site[rows_].astype(np.int32), values, costs, problem.scored.counts, best)
    # The solve's notes (pins not forced and why), not this model's.
    answer = replace(assemble(enc, scored, params, control), notes=problem.notes)
    answer.timings.update(problem.timings)
    answer.stats.update(problem.stats)  # they describe the solve's model, not this one
    answer.stats["completed_value"] = float(values[~was].sum())
    answer_choice = np.where(placed, ptr[:-1], NONE).astype(np.int64)
    return answer, answer_choice


def complete(
    problem: MarketProblem,
    choice: np.ndarray,
    control: RunControl | None = None,
    *,
    grace_s: float = 0.0,
) -> tuple[MarketProblem, np.ndarray, int]:
    """``(problem, choice, placed)``: the answer with every unplaced project that still fits
    somewhere placed (see the module docstring), on the model of the answer
    (``answer_problem``). ``control`` (a ``RunControl``) is asked between chunks of projects:
    a cancelled run, or (outside deterministic mode) one ``grace_s`` past its deadline, stops
    the pass early (the answer stays valid but may not be maximal; explanations then say "not
    reached")."""
    enc = problem.enc
    choice = np.asarray(choice, dtype=np.int64)
    if control is not None and control.cancelled:
        return problem, choice, 0  # before the set-up (seconds at 100000 projects)
    site = row_sites(problem, choice)
    unplaced = np.flatnonzero(site[enc.project_rows[:, 0]] < 0)
    # A project with a row that has no eligible site even in an empty market cannot be placed.
    eligible = problem.scored.counts[:, ELIGIBLE] > 0
    rows = enc.project_rows[unplaced]
    unplaced = unplaced[eligible[rows[:, 0]] & ((rows[:, 1] < 0) | eligible[rows[:, 1]])]
    if unplaced.size == 0 or enc.sites.n_sites == 0:
        return problem, choice, 0
    # Higher priority first, then snapshot order.
    unplaced = unplaced[
        np.argsort(
            -enc.rows.a[enc.project_rows[unplaced, 0]]
            / enc.row_share[enc.project_rows[unplaced, 0]],
            kind="stable",
        )
    ]
    left = free_left(enc, site)
    apart, cap, region = pair_arrays(enc)
    args = scan_args(enc, left, problem.params.weights.cost, FIT_MARKET)
    new_site = site.copy()
    new_cost = np.zeros(len(site), dtype=np.float64)
    placed = 0
    for lo in range(0, len(unplaced), CHUNK):
        if control is not None and (
            control.cancelled
            or (not control.deterministic and control.clock() > control.deadline + grace_s)
        ):
            break  # cancelled, or out of time: the answer stays valid (maybe not maximal)
        placed += int(
            _complete_kernel(
                unplaced[lo : lo + CHUNK].astype(np.int64),
                enc.project_rows,
                apart,
                cap,
                region,
                left,
                new_site,
                new_cost,
                *args,
            )  # fmt: skip
        )
    if placed == 0 or (control is not None and control.cancelled):
        return problem, choice, 0
    try:
        problem, new_choice = answer_problem(problem, choice, new_site, new_cost, control)
    except Stopped:
        # Cancelled during the pass or its assembly (1.3-1.9 s at 100000 x 10000 at load
        # 8): what it placed needs that model, so the answer before the pass stands.
        return problem, choice, 0
    if control is not None:
        control.report(
            "complete", placed=int(np.count_nonzero(new_site[enc.project_rows[:, 0]] >= 0))
        )
    return problem, new_choice, placed


def _warm_up_market():  # noqa: ANN202 - a MarketSnapshot
    """Two sites in two regions and one project needing two sources: explained while still
    unplaced, it takes the explanations down every pair search."""
    import datetime as dt

    from schemas.market import (
        CapacityListing,
        Certification,
        CertificationKind,
        DeviceCategory,
        MarketSnapshot,
        ProcessKind,
        ProcessLoad,
        Project,
        Region,
        RegulatoryClass,
        Site,
    )

    proc, cat = ProcessKind.FINAL_TEST, DeviceCategory.CONSUMABLES
    iso = Certification(
        kind=CertificationKind.ISO_13485, valid_from=dt.date(2000, 1, 1),
        valid_until=dt.date(2100, 1, 1),
    )  # fmt: skip
    sites = [
        Site(id=f"S{i}", cdmo_id=f"C{i}", country="SG", region=region, certifications=[iso],
             processes=[proc], categories=[cat])
        for i, region in enumerate((Region.SEA, Region.OTHER))
    ]  # fmt: skip
    listings = [
        CapacityListing(site_id=s.id, process=proc, month="2030-01", capacity_hours=1,
                        price_per_hour=1)
        for s in sites
    ]  # fmt: skip
    project = Project(
        id="P", maker_id="M", category=cat, device_class=RegulatoryClass.I,
        target_markets=[Region.SEA], loads=[ProcessLoad(process=proc, monthly_hours=[1.0])],
        window_start="2030-01", window_end="2030-01", budget_ceiling=1e6,
        second_source_required=True,
    )  # fmt: skip
    return MarketSnapshot(
        version=1, as_of=dt.date(2029, 12, 1), sites=sites, listings=listings,
        projects=[project],
    )  # fmt: skip


def warm_up() -> float:
    """Compile (or load from the on-disk cache) the kernels of the last pass and of the
    explanations; returns the seconds it took. Call at worker / app start beside
    ``kernels.warm_up()``: compiling them inside a run costs seconds of its time limit."""
    import time

    from matcher.explain import explain
    from matcher.problem import build_problem
    from schemas.market import RunParams

    t0 = time.perf_counter()
    problem = build_problem(_warm_up_market(), RunParams())
    empty = np.full(problem.model.n_items, NONE, dtype=np.int64)
    explain(problem, empty)
    complete(problem, empty)
    return time.perf_counter() - t0
