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

from matcher import reference
from matcher.control import RunControl
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


def extend_problem(
    problem: MarketProblem, prices: np.ndarray, control: RunControl | None = None
) -> tuple[MarketProblem, int]:
    """Column generation: add each row's best sites by *reduced* value under ``prices`` (per
    model resource), so rows whose top sites by value are full get sites with room.

    Candidate lists only grow, so the old ``outside_best`` still bounds every pair left out.
    Returns the new problem and the number of candidates added. A cancel of ``control``
    stops the kernel pass (``matcher.control.Stopped``).
    """
    enc, params, old = problem.enc, problem.params, problem.scored
    priced = score(enc, params, dual=_site_prices(problem, prices), control=control)
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
    new_values = reference.pair_values(
        enc.sites,
        enc.rows,
        new_row[add],
        priced.cand_site[add],
        priced.cand_cost[add],
        params.weights.cost,
        FIT_MARKET,
    )
    values = np.concatenate([old.cand_value, new_values])
    order = np.lexsort((sites_, -values, rows_))  # per row: value desc, then site asc
    ptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows_, minlength=n_rows), out=ptr[1:])
    merged = Scored(
        ptr,
        sites_[order].astype(np.int32),
        values[order],
        costs[order],
        old.counts,
        old.outside_best,
    )
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
