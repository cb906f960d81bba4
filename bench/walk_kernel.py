"""The pair-by-pair kernel that ``matcher.kernels`` replaced: the brute-force yardstick.

For every row it walks every site of its category/class list, the row's (process, month)
loads at each survivor of the mask tests one after the other (cost and capacity), then the
remaining rules, the value and the top-K. ``matcher.kernels.score_pairs`` must return exactly
what this returns (``tests/matcher/test_kernels.py`` compares them on random markets), and
``bench.kernel_bench`` times both in the same run, so that its ratio holds on a noisy machine.
Not used by the matcher.
"""

from __future__ import annotations

import numpy as np
from numba import njit, parallel_chunksize, prange

from matcher.kernels import (
    CERT_FIELD,
    ELIGIBLE,
    EXTRA_SLOTS,
    MKT_FIELD,
    N_COUNTS,
    NO_VALUE,
    PROC_FIELD,
    R_BUDGET,
    R_CAPACITY,
    R_CATEGORY,
    R_CERT,
    R_EXCLUDED,
    R_MARKET,
    R_PROCESS,
    GroupWords,
    RowArrays,
    Scored,
    SiteArrays,
    _compact_kernel,
    _heap_push,
    _heap_sort,
    _insert,
    _ranks_before,
    _sift_down,
    pair_value,
)

ROWS_PER_TASK = 16
TASKS_PER_GRAB = 4


@njit(cache=True)
def _score_rows(
    i0, i1, order, flags, surv, s_cost, s_fits, s_pen, k, w_cost, fit_market, n_sites,
    site_cdmo, site_rbit, site_fitq, free, price, dual, use_dual, gptr, gsite, gword,
    row_group, row_req, row_tmask, excl_ptr, excl, ent_ptr, ent_off, ent_units, ent_hours,
    row_budget, row_a, row_b, row_stab, row_prev, row_force, row_alt,
    out_site, out_value, out_cost, out_n, counts, outside,
):  # fmt: skip
    """Score rows ``order[i0:i1]`` (one call per parallel task: few array hand-offs)."""
    for ii in range(i0, i1):
        j = order[ii]
        g = row_group[j]
        base = gptr[g]
        n_list = gptr[g + 1] - base
        req = row_req[j]
        r_proc = req & np.uint32(PROC_FIELD)
        r_cert = req & np.uint32(CERT_FIELD)
        r_mkt = req & np.uint32(MKT_FIELD)

        # Phase A: process, certification and market mask tests over the group's site list,
        # branch-free so that it vectorises; `flags` marks the survivors.
        n_p2 = 0
        n_p3 = 0
        n_p4 = 0
        for i in range(n_list):
            w = gword[base + i]
            p2 = np.uint8((w & r_proc) == r_proc)
            p3 = p2 & np.uint8((w & r_cert) == r_cert)
            p4 = p3 & np.uint8((w & r_mkt) == r_mkt)
            n_p2 += p2
            n_p3 += p3
            n_p4 += p4
            flags[i] = p4
        m = 0
        for i in range(n_list):
            surv[m] = gsite[base + i]
            m += flags[i]

        # Phase B: exclusions, budget and capacity on the survivors; value and top-K.
        n_excl = 0
        n_budget = 0
        n_cap = 0
        n_elig = 0
        x0 = excl_ptr[j]
        x1 = excl_ptr[j + 1]
        e0 = ent_ptr[j]
        e1 = ent_ptr[j + 1]
        budget = row_budget[j]
        a = row_a[j]
        b = row_b[j]
        tmask = row_tmask[j]
        prev = row_prev[j]
        f0 = row_force[j, 0]
        f1 = row_force[j, 1]
        want_alt = row_alt[j]
        sites = out_site[j]
        vals = out_value[j]
        costs = out_cost[j]
        nk = 0
        # Two best values cut from the list (and the site of the first), for outside_best.
        o1v = NO_VALUE
        o1s = -1
        o2v = NO_VALUE
        # Forced sites found eligible.
        fv0 = NO_VALUE
        fc0 = 0.0
        fok0 = False
        fv1 = NO_VALUE
        fc1 = 0.0
        fok1 = False
        # Best eligible site, and best eligible site of a CDMO other than the best's.
        bv = NO_VALUE
        b_s = -1
        bc = 0.0
        bcd = -1
        av = NO_VALUE
        a_s = -1
        ac = 0.0
        # Phase B1: cost and capacity of every survivor. No data-dependent branch here, so
        # the CPU runs ahead over survivors and overlaps their cache misses.
        for t in range(m):
            s = surv[t]
            cost = 0.0
            fits = True
            for e in range(e0, e1):
                o = ent_off[e]
                cost += ent_hours[e] * price[s, o]
                fits &= ent_units[e] <= free[s, o]
            s_cost[t] = cost
            s_fits[t] = fits
        # Optional resource prices (Lagrangian duals): the value becomes a reduced value,
        # value - sum of price x whole hours, which prices congested capacity.
        if use_dual:
            for t in range(m):
                s = surv[t]
                pen = 0.0
                for e in range(e0, e1):
                    pen += ent_units[e] * dual[s, ent_off[e]]
                s_pen[t] = pen
        # Phase B2: the remaining rules in order, value, top-K.
        for t in range(m):
            s = surv[t]
            cd = site_cdmo[s]
            excluded = False
            for x in range(x0, x1):
                if excl[x] == cd:
                    excluded = True
                    break
            if excluded:
                n_excl += 1
                continue
            cost = s_cost[t]
            fits = s_fits[t]
            if cost > budget:
                n_budget += 1
                continue
            if not fits:
                n_cap += 1
                continue
            n_elig += 1
            v = pair_value(
                a, b, site_fitq[s], (site_rbit[s] & tmask) != 0, fit_market, w_cost, cost,
                s_pen[t] if use_dual else 0.0, row_stab[j] if s == prev else 0.0,
            )  # fmt: skip

            # Streaming "best, and best of a CDMO other than the best's"; strict > keeps the
            # lower site on ties.
            if not want_alt:
                pass
            elif cd == bcd:
                if v > bv:
                    bv = v
                    b_s = s
                    bc = cost
            elif v > bv:
                if b_s >= 0:
                    av = bv
                    a_s = b_s
                    ac = bc
                bv = v
                b_s = s
                bc = cost
                bcd = cd
            elif v > av:
                av = v
                a_s = s
                ac = cost

            if s == f0:
                fv0 = v
                fc0 = cost
                fok0 = True
                continue
            if s == f1:
                fv1 = v
                fc1 = cost
                fok1 = True
                continue
            if nk < k:
                _heap_push(sites, vals, costs, nk, s, v, cost)
                nk += 1
                continue
            if _ranks_before(v, s, vals[0], sites[0]):
                cv = vals[0]
                cs = sites[0]
                sites[0] = s
                vals[0] = v
                costs[0] = cost
                _sift_down(sites, vals, costs, 0, k)
            else:
                cv = v
                cs = s
            if cv > o1v:
                o2v = o1v
                o1v = cv
                o1s = cs
            elif cv > o2v:
                o2v = cv

        _heap_sort(sites, vals, costs, nk)
        if fok0:
            nk = _insert(sites, vals, costs, nk, f0, fv0, fc0)
        if fok1:
            nk = _insert(sites, vals, costs, nk, f1, fv1, fc1)
        if want_alt and a_s >= 0:
            kept = False
            for t in range(nk):
                if sites[t] == a_s:
                    kept = True
                    break
            if not kept:
                nk = _insert(sites, vals, costs, nk, a_s, av, ac)
                if a_s == o1s:
                    o1v = o2v
        out_n[j] = nk
        outside[j] = o1v
        counts[j, R_CATEGORY] = n_sites - n_list
        counts[j, R_PROCESS] = n_list - n_p2
        counts[j, R_CERT] = n_p2 - n_p3
        counts[j, R_MARKET] = n_p3 - n_p4
        counts[j, R_EXCLUDED] = n_excl
        counts[j, R_BUDGET] = n_budget
        counts[j, R_CAPACITY] = n_cap
        counts[j, ELIGIBLE] = n_elig


@njit(cache=True, parallel=True)
def _score_kernel(
    order, k, w_cost, fit_market, n_sites, max_list,
    site_cdmo, site_rbit, site_fitq, free, price, dual, use_dual, gptr, gsite, gword,
    row_group, row_req, row_tmask, excl_ptr, excl, ent_ptr, ent_off, ent_units, ent_hours,
    row_budget, row_a, row_b, row_stab, row_prev, row_force, row_alt,
    out_site, out_value, out_cost, out_n, counts, outside,
):  # fmt: skip
    n = order.shape[0]
    n_tasks = (n + ROWS_PER_TASK - 1) // ROWS_PER_TASK
    for task in prange(n_tasks):
        flags = np.empty(max_list, dtype=np.uint8)
        surv = np.empty(max_list, dtype=np.int32)
        s_cost = np.empty(max_list, dtype=np.float64)
        s_fits = np.empty(max_list, dtype=np.bool_)
        s_pen = np.empty(max_list, dtype=np.float64)
        _score_rows(
            task * ROWS_PER_TASK, min(n, (task + 1) * ROWS_PER_TASK), order, flags, surv,
            s_cost, s_fits, s_pen, k, w_cost, fit_market, n_sites,
            site_cdmo, site_rbit, site_fitq, free, price, dual, use_dual, gptr, gsite, gword,
            row_group, row_req, row_tmask, excl_ptr, excl, ent_ptr, ent_off, ent_units,
            ent_hours, row_budget, row_a, row_b, row_stab, row_prev, row_force, row_alt,
            out_site, out_value, out_cost, out_n, counts, outside,
        )  # fmt: skip


def score_pairs_walk(
    sites: SiteArrays,
    rows: RowArrays,
    words: GroupWords,
    *,
    k: int,
    w_cost: float,
    fit_market: float,
    dual: np.ndarray | None = None,
) -> Scored:
    """What ``matcher.kernels.score_pairs`` returns, computed pair by pair."""
    n = rows.n_rows
    width = k + EXTRA_SLOTS
    buf_site = np.empty((n, width), dtype=np.int32)
    buf_value = np.empty((n, width), dtype=np.int64)
    buf_cost = np.empty((n, width), dtype=np.float64)
    out_n = np.zeros(n, dtype=np.int64)
    counts = np.zeros((n, N_COUNTS), dtype=np.int64)
    outside = np.full(n, NO_VALUE, dtype=np.int64)
    if n and sites.n_sites:
        order = np.lexsort((rows.req, rows.group)).astype(np.int64)
        max_list = max(1, int(np.diff(words.ptr).max()))
        with parallel_chunksize(TASKS_PER_GRAB):
            _score_kernel(
                order, k, float(w_cost), float(fit_market), sites.n_sites, max_list,
                sites.cdmo, sites.region_bit, sites.fitq, sites.free, sites.price,
                np.zeros((1, 1)) if dual is None else np.ascontiguousarray(dual, np.float64),
                dual is not None, words.ptr, words.site, words.word,
                rows.group, rows.req, rows.tmask, rows.excl_ptr, rows.excl, rows.ent_ptr,
                rows.ent_off, rows.ent_units, rows.ent_hours, rows.budget, rows.a, rows.b,
                rows.stab, rows.prev, rows.force, rows.alt,
                buf_site, buf_value, buf_cost, out_n, counts, outside,
            )  # fmt: skip
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(out_n, out=ptr[1:])
    total = int(ptr[-1])
    cand_site = np.empty(total, dtype=np.int32)
    cand_value = np.empty(total, dtype=np.int64)
    cand_cost = np.empty(total, dtype=np.float64)
    if total:
        _compact_kernel(ptr, buf_site, buf_value, buf_cost, cand_site, cand_value, cand_cost)
    return Scored(ptr, cand_site, cand_value, cand_cost, counts, outside)
