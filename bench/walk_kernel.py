"""The pair-by-pair walk (``matcher.kernels.score_pairs(method="walk")``), by name.

The kernels take it for small calls; for large ones they score lanes. The benchmarks time the
walk beside the lanes in the same run (so that their ratio holds on a noisy machine), and
the tests hold the two to the same bits.
"""

from __future__ import annotations

import numpy as np

from matcher.kernels import GroupWords, RowArrays, Scored, SiteArrays, score_pairs


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
    """``score_pairs`` computed pair by pair, whatever the size."""
    return score_pairs(
        sites, rows, words, k=k, w_cost=w_cost, fit_market=fit_market, dual=dual, method="walk"
    )


def score_pairs_lanes(
    sites: SiteArrays,
    rows: RowArrays,
    words: GroupWords,
    *,
    k: int,
    w_cost: float,
    fit_market: float,
    dual: np.ndarray | None = None,
) -> Scored:
    """``score_pairs`` computed on lanes, whatever the size."""
    return score_pairs(
        sites, rows, words, k=k, w_cost=w_cost, fit_market=fit_market, dual=dual, method="lanes"
    )
