"""Pricing: column generation, the bound over the whole market, and the parts of a value.

* ``extend_problem``: the solve's Lagrangian capacity prices go back into the kernels as
  duals; each row gets its best sites by *reduced* value (where there is still room) added
  to its candidates (column generation);
* ``market_bound``: one kernel pass with those prices over every eligible pair gives a
  Lagrangian bound over the whole market, not only over the candidates;
* ``value_parts``: a placement's value broken into priority, fit (quality and market), cost
  and stability, for explanations.

The value formula itself is written once in the kernels (``matcher.kernels``) and once in
NumPy (``matcher.reference.pair_values``, the twin the tests hold the kernels to).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numba import njit

from matcher import reference
from matcher.control import RunControl, Stopped
from matcher.encode import FIT_MARKET, Encoded
from matcher.kernels import Scored
from matcher.problem import MarketProblem, assemble, score
from schemas.market import RunParams


@dataclass(frozen=True)
class ValueParts:
    """The terms of a pair's value (arrays, one entry per pair); ``value`` is their rounded
    sum, exactly as the solver sees it."""

    priority: np.ndarray  # share x priority weight x priority
    quality: np.ndarray  # priority term x fit weight x FIT_QUALITY x site quality
    market: np.ndarray  # priority term x fit weight x FIT_MARKET, site in a target market
    cost: np.ndarray  # - cost weight x cost (currency)
    stability: np.ndarray  # stability weight x share at the previous proposal's site
    value: np.ndarray  # int64: round(priority + quality + market + cost + stability)

    @property
    def fit(self) -> np.ndarray:
        return self.quality + self.market


def value_parts(
    enc: Encoded, params: RunParams, rows: np.ndarray, sites: np.ndarray, costs: np.ndarray
) -> ValueParts:
    """Parts of the value of placing row ``rows[i]`` at site ``sites[i]`` at ``costs[i]``."""
    r, st = enc.rows, enc.sites
    rows = np.asarray(rows, dtype=np.int64)
    sites = np.asarray(sites, dtype=np.int64)
    costs = np.asarray(costs, dtype=np.float64)
    in_market = (st.region_bit[sites] & r.tmask[rows]) != 0
    return ValueParts(
        priority=r.a[rows],
        quality=r.b[rows] * st.fitq[sites],
        market=np.where(in_market, r.b[rows] * FIT_MARKET, 0.0),
        cost=-params.weights.cost * costs,
        stability=np.where(sites == r.prev[rows], r.stab[rows], 0.0),
        value=reference.pair_values(st, r, rows, sites, costs, params.weights.cost, FIT_MARKET),
    )


def _site_prices(problem: MarketProblem, prices: np.ndarray) -> np.ndarray:
    """Model resource prices laid out as the kernels' [site, process x month] array."""
    dual = np.zeros(problem.enc.sites.free.size, dtype=np.float64)
    site_res = problem.res_key < dual.size  # side resources (matcher.pairs) have no site
    dual[problem.res_key[site_res]] = prices[site_res]
    return dual.reshape(problem.enc.sites.free.shape)


# Values of new candidates computed between two checks of the cancel flag (NumPy; ~0.1 s at
# load 3 for 2^18 pairs, while the 1.35 M new candidates of a 100000 x 10000 round take 0.6 s).
VALUES_PER_CHECK = 1 << 18


@njit(cache=True)
def _new_sites(old_ptr, old_site, new_ptr, new_site, out):
    """``out[c]``: whether priced candidate c is at a site not yet in its row's list."""
    for r in range(len(old_ptr) - 1):
        for c in range(new_ptr[r], new_ptr[r + 1]):
            new = True
            for d in range(old_ptr[r], old_ptr[r + 1]):
                if old_site[d] == new_site[c]:
                    new = False
                    break
            out[c] = new


@njit(cache=True)
def _merge_lists(
    old_ptr, old_site, old_value, old_cost, new_ptr, new_site, new_cost, add, add_value,
    ptr, site, value, cost,
):  # fmt: skip
    """Each row's old candidates and its added ones (``add``; values ``add_value`` in order)
    in one list per row, by value (highest first) then site (lowest first), like the kernels
    rank them. ``ptr`` is the merged CSR's."""
    k = 0
    for r in range(len(old_ptr) - 1):
        at = ptr[r]
        for d in range(old_ptr[r], old_ptr[r + 1]):
            site[at], value[at], cost[at] = old_site[d], old_value[d], old_cost[d]
            at += 1
        for c in range(new_ptr[r], new_ptr[r + 1]):
            if add[c]:
                site[at], value[at], cost[at] = new_site[c], add_value[k], new_cost[c]
                k += 1
                at += 1
        for i in range(ptr[r] + 1, at):  # insertion sort: a few dozen entries per row
            s, v, w = site[i], value[i], cost[i]
            j = i - 1
            while j >= ptr[r] and (value[j] < v or (value[j] == v and site[j] > s)):
                site[j + 1], value[j + 1], cost[j + 1] = site[j], value[j], cost[j]
                j -= 1
            site[j + 1], value[j + 1], cost[j + 1] = s, v, w


def extend_problem(
    problem: MarketProblem, prices: np.ndarray, control: RunControl | None = None
) -> tuple[MarketProblem, int]:
    """Column generation: add each row's best sites by *reduced* value under ``prices`` (per
    model resource), so rows whose top sites by value are full get sites with room.

    Candidate lists only grow, so the old ``outside_best`` still bounds every pair left out.
    Returns the new problem and the number of candidates added. A cancel of ``control``
    stops it between chunks of its steps (``matcher.control.Stopped``).
    """
    enc, params, old = problem.enc, problem.params, problem.scored
    priced = score(enc, params, dual=_site_prices(problem, prices), control=control)
    n_rows = enc.rows.n_rows
    add = np.empty(len(priced.cand_site), dtype=np.bool_)
    _new_sites(old.cand_ptr, old.cand_site, priced.cand_ptr, priced.cand_site, add)
    added = int(add.sum())
    if added == 0:
        return problem, 0
    new_row = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(priced.cand_ptr))[add]
    new_site, new_cost = priced.cand_site[add], priced.cand_cost[add]
    new_value = np.empty(added, dtype=np.int64)
    for lo in range(0, added, VALUES_PER_CHECK):  # a cancel is heard between chunks
        if control is not None and control.cancelled:
            raise Stopped("cancelled while pricing")
        hi = min(added, lo + VALUES_PER_CHECK)
        new_value[lo:hi] = reference.pair_values(
            enc.sites, enc.rows, new_row[lo:hi], new_site[lo:hi], new_cost[lo:hi],
            params.weights.cost, FIT_MARKET,
        )  # fmt: skip
    ptr = old.cand_ptr + np.concatenate(([0], np.cumsum(np.bincount(new_row, minlength=n_rows))))
    site = np.empty(ptr[-1], dtype=np.int32)
    value = np.empty(ptr[-1], dtype=np.int64)
    cost = np.empty(ptr[-1], dtype=np.float64)
    _merge_lists(
        old.cand_ptr, old.cand_site, old.cand_value, old.cand_cost, priced.cand_ptr,
        priced.cand_site, priced.cand_cost, add, new_value, ptr, site, value, cost,
    )  # fmt: skip
    merged = Scored(ptr, site, value, cost, old.counts, old.outside_best)
    extended = assemble(enc, merged, params, control)
    extended.timings.update(problem.timings)
    extended.stats["priced_candidates"] = problem.stats.get("priced_candidates", 0) + added
    return extended, added


def market_bound(
    problem: MarketProblem,
    prices: np.ndarray,
    control: RunControl | None = None,
    stop: Callable[[], bool] | None = None,
) -> int:
    """Lagrangian bound over *every* eligible pair of the market, not only the candidates:

        sum of price x capacity + sum over rows of max(0, best reduced value of the row),

    one kernel pass with the prices as duals (k=1: the best pair and the best left out).
    Second-source links and pins are relaxed, which only loosens it. Reduced values are
    rounded to the nearest integer by the kernel, hence the half point per row.
    """
    enc, params = problem.enc, problem.params
    priced = score(enc, params, k=1, dual=_site_prices(problem, prices), control=control, stop=stop)
    best = priced.outside_best.astype(np.float64)
    has = np.diff(priced.cand_ptr) > 0
    if has.any():
        top = np.maximum.reduceat(priced.cand_value, priced.cand_ptr[:-1][has])
        best[has] = np.maximum(best[has], top)
    rows_total = float(np.maximum(best + 0.5, 0.0).sum())
    return int(np.floor(float(prices @ problem.model.capacity) + rows_total + 1e-6))
