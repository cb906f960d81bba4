"""Plain vectorised NumPy twins of ``matcher.kernels``: slow, simple, and the tests' yardstick.

Same inputs, same outputs, same bits: every floating-point expression is evaluated in the
kernels' order, so values, costs and budget decisions agree exactly. Rows are processed in
chunks so that the [rows, sites] temporaries of a 1e9-pair market fit in memory. Unlike the
kernels, every pair is evaluated against every site (no category/class index): this is the
straightforward NumPy formulation the benchmark compares the kernels with.
"""

from __future__ import annotations

import numpy as np

from matcher.kernels import (
    CERT_FIELD,
    CERT_SHIFT,
    ELIGIBLE,
    MKT_FIELD,
    MKT_SHIFT,
    N_CLASSES,
    N_COUNTS,
    NO_VALUE,
    PROC_FIELD,
    R_BUDGET,
    R_CAPACITY,
    R_CATEGORY,
    R_EXCLUDED,
    VALUE_CLIP,
    RowArrays,
    Scored,
    SiteArrays,
    cc_lists,
)
from matcher.kernels import GroupWords as GroupWords


def site_table(sites: SiteArrays, rows: RowArrays, groups: np.ndarray | None = None) -> np.ndarray:
    """Site word of every (group, site), over all sites: ``uint32 [G, S]`` (or those groups)."""
    groups = np.arange(len(rows.grp_cc)) if groups is None else groups
    n_groups, n_sites = len(groups), sites.n_sites
    cls = (rows.grp_cc[groups] % N_CLASSES).astype(np.int64)
    m0 = rows.grp_m0[groups]
    m1 = rows.grp_m1[groups]
    certs = np.zeros((n_groups, n_sites), dtype=np.int64)
    n_certs = np.diff(sites.cert_ptr)
    cert_site = np.repeat(np.arange(n_sites), n_certs)
    rank = np.arange(len(cert_site)) - np.repeat(sites.cert_ptr[:-1], n_certs)
    # valid[g, q]: certificate q counts for group g (scope covers the class, valid all window)
    valid = (
        (((sites.cert_cls.astype(np.int64)[None, :] >> cls[:, None]) & 1) == 1)
        & (sites.cert_first[None, :] <= m0[:, None])
        & (m1[:, None] <= sites.cert_last[None, :])
    )
    bits = np.where(valid, np.int64(1) << sites.cert_kind.astype(np.int64)[None, :], 0)
    # Certificates of equal rank belong to distinct sites, so plain fancy assignment is safe.
    for r in range(int(n_certs.max()) if n_sites and len(cert_site) else 0):
        q = np.flatnonzero(rank == r)
        certs[:, cert_site[q]] |= bits[:, q]
    words = sites.word0.astype(np.int64)[None, :] | (certs << CERT_SHIFT)
    for kind, region in enumerate(sites.access_region):
        if region >= 0:
            words |= np.where((certs >> kind) & 1, np.int64(1) << (MKT_SHIFT + int(region)), 0)
    return words.astype(np.uint32)


def group_words(sites: SiteArrays, rows: RowArrays) -> GroupWords:
    """Twin of ``kernels.group_words``: the table restricted to each group's site list."""
    table = site_table(sites, rows)
    n_bits = int(rows.grp_cc.max()) + 1 if len(rows.grp_cc) else 0
    cc_ptr, cc_site = cc_lists(sites.cc, n_bits)
    site_parts, word_parts = [], []
    for g, c in enumerate(rows.grp_cc):
        members = cc_site[cc_ptr[c] : cc_ptr[c + 1]]
        site_parts.append(members)
        word_parts.append(table[g, members])
    ptr = np.zeros(len(rows.grp_cc) + 1, dtype=np.int64)
    np.cumsum([len(x) for x in site_parts], out=ptr[1:])
    site = np.concatenate(site_parts).astype(np.int32) if site_parts else np.zeros(0, np.int32)
    word = np.concatenate(word_parts).astype(np.uint32) if word_parts else np.zeros(0, np.uint32)
    return GroupWords(ptr, site, word)


def _gather_rows(ptr: np.ndarray, data: np.ndarray, rows: np.ndarray, fill) -> np.ndarray:
    """Ragged CSR segments of ``rows`` as a padded [len(rows), max_len] matrix."""
    lengths = ptr[rows + 1] - ptr[rows]
    width = int(lengths.max()) if len(rows) else 0
    out = np.full((len(rows), width), fill, dtype=data.dtype)
    col = np.arange(width)
    mask = col[None, :] < lengths[:, None]
    out[mask] = data[(ptr[rows][:, None] + col[None, :])[mask]]
    return out


def _rules(sites, rows, word, chunk):
    """First failed rule per (row, site) (``R_*`` or ``ELIGIBLE``, int8 [R, S]) and the cost
    of every pair that reaches the budget rule (0 elsewhere)."""
    n_sites = sites.n_sites
    word = word.astype(np.int64)
    req = rows.req[chunk].astype(np.int64)[:, None]
    cc = rows.grp_cc[rows.group[chunk]].astype(np.int64)[:, None]
    mask_rules = [
        ((sites.cc.astype(np.int64)[None, :] >> cc) & 1) == 1,
        (word & (req & PROC_FIELD)) == (req & PROC_FIELD),
        (word & (req & CERT_FIELD)) == (req & CERT_FIELD),
        (word & (req & MKT_FIELD)) == (req & MKT_FIELD),
    ]
    code = np.full((len(chunk), n_sites), ELIGIBLE, dtype=np.int8)
    for rule in range(len(mask_rules) - 1, -1, -1):  # the earliest failing rule wins
        code[~mask_rules[rule]] = rule
    cost = np.zeros((len(chunk), n_sites))

    # The remaining rules only for the pairs that passed the masks, as (row, site) lists.
    rr, ss = np.nonzero(code == ELIGIBLE)
    excl = _gather_rows(rows.excl_ptr, rows.excl, chunk, -1)[rr]
    excluded = np.zeros(len(rr), dtype=bool)
    for t in range(excl.shape[1]):
        excluded |= sites.cdmo[ss] == excl[:, t]
    off = _gather_rows(rows.ent_ptr, rows.ent_off, chunk, 0)
    hours = _gather_rows(rows.ent_ptr, rows.ent_hours, chunk, 0.0)
    units = _gather_rows(rows.ent_ptr, rows.ent_units, chunk, 0)
    present = _gather_rows(rows.ent_ptr, np.ones(len(rows.ent_off), bool), chunk, False)
    price, free = sites.price.ravel(), sites.free.ravel()
    base = ss.astype(np.int64) * sites.price.shape[1]
    pair_cost = np.zeros(len(rr))
    fits = np.ones(len(rr), dtype=bool)
    for t in range(off.shape[1]):  # entry by entry, in the kernel's order of additions
        at = base + off[rr, t]
        pair_cost += np.where(present[rr, t], hours[rr, t] * price[at], 0.0)
        fits &= ~present[rr, t] | (units[rr, t] <= free[at])
    over = pair_cost > rows.budget[chunk][rr]
    code[rr, ss] = np.where(
        excluded, R_EXCLUDED, np.where(over, R_BUDGET, np.where(fits, ELIGIBLE, R_CAPACITY))
    )
    cost[rr, ss] = np.where(excluded, 0.0, pair_cost)
    return code, cost


def first_failed_rules(sites: SiteArrays, rows: RowArrays, js: np.ndarray) -> np.ndarray:
    """Per row ``js[i]`` and site, the first rule failed there (``R_*``) or ``ELIGIBLE``.

    ``int8 [len(js), S]``; used to explain rows, in chunks of a few hundred.
    """
    js = np.asarray(js, dtype=np.int64)
    groups, local = np.unique(rows.group[js], return_inverse=True)
    word = site_table(sites, rows, groups=groups)[local]
    return _rules(sites, rows, word, js)[0]


def _priced_hours(rows, chunk, dual):
    """[rows, sites]: sum over each row's entries of whole hours x the site's dual price."""
    out = np.zeros((len(chunk), dual.shape[0]))
    for n, j in enumerate(chunk):
        e = slice(rows.ent_ptr[j], rows.ent_ptr[j + 1])
        out[n] = dual[:, rows.ent_off[e]] @ rows.ent_units[e].astype(np.float64)
    return out


def pair_values(
    sites: SiteArrays,
    rows: RowArrays,
    row: np.ndarray,
    site: np.ndarray,
    cost: np.ndarray,
    w_cost: float,
    fit_market: float,
    priced: np.ndarray | None = None,
) -> np.ndarray:
    """The kernels' value of pairs (``row``, ``site``) at ``cost`` (arrays that broadcast),
    in the kernels' order of operations, so the bits agree; ``priced`` (dual x whole hours)
    makes it the reduced value. The one NumPy copy of the value formula."""
    in_market = (sites.region_bit[site] & rows.tmask[row]) != 0
    fit = sites.fitq[site] + np.where(in_market, fit_market, 0.0)
    xv = rows.a[row] + rows.b[row] * fit - w_cost * cost
    if priced is not None:
        xv = xv - priced
    xv = np.where(site == rows.prev[row], xv + rows.stab[row], xv)
    return np.floor(np.clip(xv, -VALUE_CLIP, VALUE_CLIP) + 0.5).astype(np.int64)


def _score_chunk(sites, rows, table, chunk, k, w_cost, fit_market, dual=None):
    n_sites = sites.n_sites
    n_rows = len(chunk)
    site_idx = np.arange(n_sites)
    code, cost = _rules(sites, rows, table[rows.group[chunk]], chunk)
    counts = np.zeros((n_rows, N_COUNTS), dtype=np.int64)
    for rule in range(N_COUNTS):
        counts[:, rule] = (code == rule).sum(axis=1)
    eligible = code == ELIGIBLE

    priced = None if dual is None else _priced_hours(rows, chunk, dual)
    value = pair_values(
        sites, rows, chunk[:, None], site_idx[None, :], cost, w_cost, fit_market, priced
    )

    # Rank key: higher value first, then lower site index (|value| <= 1e12, so no overflow).
    low = np.iinfo(np.int64).min // 2
    key = np.where(eligible, value * max(n_sites, 1) + (n_sites - 1 - site_idx)[None, :], low)
    forced = (site_idx[None, :] == rows.force[chunk, 0:1]) | (
        site_idx[None, :] == rows.force[chunk, 1:2]
    )
    # Top-k of the eligible, non-forced sites: sort those pairs by (row, rank key desc).
    pr, ps = np.nonzero(eligible & ~forced)
    order = np.lexsort((-key[pr, ps], pr))
    pr, ps = pr[order], ps[order]
    first = np.searchsorted(pr, np.arange(n_rows))
    top = np.arange(len(pr)) - first[pr] < k
    keep = np.zeros_like(eligible)
    keep[pr[top], ps[top]] = True
    keep |= forced & eligible

    # The alternative-CDMO site of alt rows: best eligible site of another CDMO than the best's.
    best = np.argmax(key, axis=1)
    other = eligible & (sites.cdmo[None, :] != sites.cdmo[best][:, None])
    alt_site = np.argmax(np.where(other, key, low), axis=1)
    has_alt = rows.alt[chunk] & other.any(axis=1)
    keep[np.flatnonzero(has_alt), alt_site[has_alt]] = True

    left_out = eligible & ~keep
    outside = np.where(left_out.any(axis=1), np.where(left_out, value, low).max(axis=1), NO_VALUE)

    # Kept pairs, sorted by row, then rank key descending.
    rr, ss = np.nonzero(keep)
    order = np.lexsort((-key[rr, ss], rr))
    rr, ss = rr[order], ss[order]
    return (
        np.bincount(rr, minlength=n_rows),
        ss.astype(np.int32),
        value[rr, ss],
        cost[rr, ss],
        counts,
        outside.astype(np.int64),
    )


def score_pairs(
    sites: SiteArrays,
    rows: RowArrays,
    table: np.ndarray,
    *,
    k: int,
    w_cost: float,
    fit_market: float,
    chunk_pairs: int = 4_000_000,
    dual: np.ndarray | None = None,
) -> Scored:
    """Twin of ``kernels.score_pairs`` (``table`` from ``site_table``, not group words)."""
    if k < 1:
        raise ValueError("k must be at least 1")
    n, n_sites = rows.n_rows, sites.n_sites
    n_keep = np.zeros(n, dtype=np.int64)
    counts = np.zeros((n, N_COUNTS), dtype=np.int64)
    counts[:, R_CATEGORY] = n_sites
    outside = np.full(n, NO_VALUE, dtype=np.int64)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    step = max(1, chunk_pairs // max(n_sites, 1))
    if n_sites:
        for lo in range(0, n, step):
            chunk = np.arange(lo, min(n, lo + step))
            nk, s, v, c, cnt, out = _score_chunk(
                sites, rows, table, chunk, k, w_cost, fit_market, dual
            )
            n_keep[chunk] = nk
            counts[chunk] = cnt
            outside[chunk] = out
            parts.append((s, v, c))
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(n_keep, out=ptr[1:])
    if parts:
        cand_site = np.concatenate([p[0] for p in parts])
        cand_value = np.concatenate([p[1] for p in parts])
        cand_cost = np.concatenate([p[2] for p in parts])
    else:
        cand_site = np.zeros(0, np.int32)
        cand_value = np.zeros(0, np.int64)
        cand_cost = np.zeros(0, np.float64)
    return Scored(ptr, cand_site, cand_value, cand_cost, counts, outside)


def evaluate(
    sites: SiteArrays, rows: RowArrays, *, k: int, w_cost: float, fit_market: float
) -> Scored:
    """Twin of ``kernels.evaluate``."""
    return score_pairs(
        sites, rows, site_table(sites, rows), k=k, w_cost=w_cost, fit_market=fit_market
    )
