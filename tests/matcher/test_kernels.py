"""Numba kernels against their NumPy twins: random inputs and edge cases, bit for bit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from market_factories import random_arrays

from bench.walk_kernel import score_pairs_lanes, score_pairs_walk
from matcher import kernels, reference
from matcher.generate import generate_market
from matcher.kernels import ELIGIBLE, NO_VALUE, PROC_FIELD, R_CATEGORY, R_PROCESS
from matcher.problem import FIT_MARKET, encode
from schemas.market import RunParams


def assert_same(got: kernels.Scored, want: kernels.Scored) -> None:
    for name in ("cand_ptr", "cand_site", "cand_value", "cand_cost", "counts", "outside_best"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)


def no_loads(rows):
    return dataclasses.replace(
        rows,
        ent_ptr=np.zeros(rows.n_rows + 1, dtype=np.int64),
        ent_off=np.zeros(0, np.int32),
        ent_units=np.zeros(0, np.int64),
        ent_hours=np.zeros(0),
    )


def both(sites, rows, k, w_cost=1.0, fit_market=0.25):
    """Both kernels (lanes and the pair-by-pair walk) against the twin; the lanes' result."""
    words = kernels.group_words(sites, rows)
    kw = {"k": k, "w_cost": w_cost, "fit_market": fit_market}
    got = score_pairs_lanes(sites, rows, words, **kw)
    want = reference.evaluate(sites, rows, **kw)
    assert_same(got, want)
    assert_same(score_pairs_walk(sites, rows, words, **kw), want)
    assert_same(kernels.evaluate(sites, rows, **kw), want)  # the size's choice
    return got


def check_invariants(sc: kernels.Scored, rows: kernels.RowArrays, k: int) -> None:
    n_sites_seen = sc.counts.sum(axis=1)
    assert np.all(n_sites_seen == n_sites_seen[0]) if len(n_sites_seen) else True
    for j in range(rows.n_rows):
        seg = slice(sc.cand_ptr[j], sc.cand_ptr[j + 1])
        sites, vals = sc.cand_site[seg], sc.cand_value[seg]
        assert len(set(sites.tolist())) == len(sites)
        assert len(sites) <= min(sc.counts[j, ELIGIBLE], k + kernels.EXTRA_SLOTS)
        # Sorted by value desc, then site asc.
        for t in range(len(sites) - 1):
            assert vals[t] > vals[t + 1] or (vals[t] == vals[t + 1] and sites[t] < sites[t + 1])
        if sc.counts[j, ELIGIBLE] > len(sites):
            assert sc.outside_best[j] > NO_VALUE
        else:
            assert sc.outside_best[j] == NO_VALUE


def test_group_words_match_twin():
    rng = np.random.default_rng(3)
    sites, rows = random_arrays(rng, 40, 60, months=4, n_groups=7)
    got = kernels.group_words(sites, rows)
    want = reference.group_words(sites, rows)
    for name in ("ptr", "site", "word"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("k", [1, 3, 8])
def test_random_inputs_match_twin(seed, k):
    rng = np.random.default_rng(seed)
    sites, rows = random_arrays(
        rng, int(rng.integers(1, 60)), int(rng.integers(1, 50)), ties=seed % 2 == 0
    )
    sc = both(sites, rows, k)
    check_invariants(sc, rows, k)


def test_real_market_matches_twin():
    snap = generate_market(300, 120, months=12, seed=5)
    enc = encode(snap, RunParams())
    sc = both(enc.sites, enc.rows, 4, w_cost=0.01, fit_market=FIT_MARKET)
    assert sc.counts[:, ELIGIBLE].sum() > 0
    check_invariants(sc, enc.rows, 4)


def test_no_rows():
    rng = np.random.default_rng(0)
    sites, rows = random_arrays(rng, 0, 10)
    sc = both(sites, rows, 4)
    assert sc.cand_ptr.tolist() == [0] and sc.counts.shape == (0, kernels.N_COUNTS)


def test_no_sites():
    rng = np.random.default_rng(0)
    sites, rows = random_arrays(rng, 7, 0)
    sc = both(sites, rows, 4)
    assert sc.cand_ptr.tolist() == [0] * 8
    assert np.all(sc.counts == 0) and np.all(sc.outside_best == NO_VALUE)


def test_all_ineligible():
    rng = np.random.default_rng(1)
    sites, rows = random_arrays(rng, 20, 30)
    # Process bits 8-9 exist at no site; every site that serves the category fails on them.
    rows = dataclasses.replace(rows, req=rows.req | np.uint32(PROC_FIELD & (0b11 << 24)))
    sc = both(sites, rows, 4)
    assert sc.cand_ptr[-1] == 0
    assert np.all(sc.counts[:, ELIGIBLE] == 0)
    assert np.all(sc.counts[:, R_CATEGORY] + sc.counts[:, R_PROCESS] == 30)


def test_all_zero_loads():
    rng = np.random.default_rng(2)
    sites, rows = random_arrays(rng, 25, 30)
    rows = no_loads(rows)
    sc = both(sites, rows, 5)
    assert np.all(sc.cand_cost == 0.0)
    # Nothing can fail budget or capacity without load.
    assert np.all(sc.counts[:, kernels.R_BUDGET] == 0)
    assert np.all(sc.counts[:, kernels.R_CAPACITY] == 0)


def test_ties_break_to_lower_site_index():
    rng = np.random.default_rng(4)
    sites, rows = random_arrays(rng, 10, 40)
    sites = dataclasses.replace(
        sites,
        cc=np.full(40, 0xFFFFFFF, np.uint32),
        word0=np.full(40, 0x3FF << 16 | 0x1F << 10, np.uint32),
        fitq=np.zeros(40),
        price=np.zeros_like(sites.price),
        free=np.full_like(sites.free, 100),
    )
    rows = dataclasses.replace(
        no_loads(rows),
        req=np.zeros(10, np.uint32),
        excl_ptr=np.zeros(11, np.int64),
        excl=np.zeros(0, np.int32),
        a=np.full(10, 7.0),
        b=np.zeros(10),
        prev=np.full(10, -1, np.int32),
        force=np.full((10, 2), -1, np.int32),
        alt=np.zeros(10, bool),
        budget=np.full(10, np.inf),
    )
    sc = both(sites, rows, 5)
    for j in range(10):
        seg = slice(sc.cand_ptr[j], sc.cand_ptr[j + 1])
        assert sc.cand_site[seg].tolist() == [0, 1, 2, 3, 4]
        assert sc.outside_best[j] == 7


def test_k_larger_than_eligible_keeps_everything():
    rng = np.random.default_rng(5)
    sites, rows = random_arrays(rng, 30, 12)
    sc = both(sites, rows, 200)
    assert np.array_equal(np.diff(sc.cand_ptr), sc.counts[:, ELIGIBLE])
    assert np.all(sc.outside_best == NO_VALUE)


def test_forced_and_alternative_sites_are_kept():
    rng = np.random.default_rng(6)
    n = 8
    sites, rows = random_arrays(rng, n, 20, n_cdmo=2)
    sites = dataclasses.replace(
        sites,
        cc=np.full(20, 0xFFFFFFF, np.uint32),
        word0=np.full(20, 0x3FF << 16 | 0x1F << 10, np.uint32),
        free=np.full_like(sites.free, 100),
        cdmo=np.r_[np.zeros(19), 1].astype(np.int32),  # only site 19 is another CDMO
        fitq=np.linspace(0.0, 0.5, 20)[::-1].copy(),  # site 0 best, site 19 worst
        price=np.zeros_like(sites.price),
    )
    rows = dataclasses.replace(
        no_loads(rows),
        req=np.zeros(n, np.uint32),
        excl_ptr=np.zeros(n + 1, np.int64),
        excl=np.zeros(0, np.int32),
        budget=np.full(n, np.inf),
        a=np.full(n, 100.0),
        b=np.full(n, 100.0),
        force=np.tile(np.array([[12, 15]], np.int32), (n, 1)),
        alt=np.ones(n, bool),
        prev=np.full(n, -1, np.int32),
        tmask=np.zeros(n, np.uint32),
    )
    sc = both(sites, rows, 2)
    for j in range(n):
        got = sc.cand_site[sc.cand_ptr[j] : sc.cand_ptr[j + 1]].tolist()
        assert got == [0, 1, 12, 15, 19]
    # The best site left out is site 2 (0 and 1 are the top-2; 12, 15, 19 are kept too).
    full = reference.evaluate(sites, rows, k=20, w_cost=1.0, fit_market=0.25)
    assert full.cand_site[2] == 2
    assert np.all(sc.outside_best == full.cand_value[2])


def test_warm_up_returns_quickly_once_compiled():
    kernels.warm_up()
    assert kernels.warm_up() < 5.0


def test_take_rows_scores_like_the_full_set():
    rng = np.random.default_rng(9)
    sites, rows = random_arrays(rng, 30, 25)
    full = kernels.evaluate(sites, rows, k=3, w_cost=1.0, fit_market=0.25)
    idx = np.array([4, 17, 0, 29])
    part = kernels.evaluate(sites, kernels.take_rows(rows, idx), k=3, w_cost=1.0, fit_market=0.25)
    np.testing.assert_array_equal(part.counts, full.counts[idx])
    for i, j in enumerate(idx):
        got = part.cand_site[part.cand_ptr[i] : part.cand_ptr[i + 1]]
        want = full.cand_site[full.cand_ptr[j] : full.cand_ptr[j + 1]]
        np.testing.assert_array_equal(got, want)


def test_warm_up_compiles_the_signatures_real_markets_use():
    # If encode produced other dtypes than tiny_inputs, the first request would compile again.
    kernels.warm_up()
    before = {
        name: len(getattr(kernels, name).signatures)
        for name in (
            "_group_words_kernel",
            "_lane_columns",
            "_lane_words",
            "_and_words",
            "_score_kernel",
            "_compact_kernel",
        )
    }
    snap = generate_market(40, 15, months=4, seed=1)
    enc = encode(snap, RunParams())
    for method in ("walk", "lanes"):
        kernels.score_pairs(
            enc.sites, enc.rows, enc.words, k=4, w_cost=0.01, fit_market=FIT_MARKET, method=method
        )
    for name, n in before.items():
        assert len(getattr(kernels, name).signatures) == n, name


@pytest.mark.parametrize("seed", range(6))
def test_dual_prices_match_twin_and_lower_values(seed):
    rng = np.random.default_rng(100 + seed)
    sites, rows = random_arrays(rng, 40, 30, ties=False)
    # Quarter-unit prices keep the sums exact in both implementations.
    dual = rng.integers(0, 8, size=sites.free.shape) / 4.0
    got = kernels.evaluate(sites, rows, k=3, w_cost=1.0, fit_market=0.25)
    priced = kernels.score_pairs(
        sites, rows, kernels.group_words(sites, rows), k=3, w_cost=1.0, fit_market=0.25, dual=dual
    )
    lanes = score_pairs_lanes(
        sites, rows, kernels.group_words(sites, rows), k=3, w_cost=1.0, fit_market=0.25, dual=dual
    )
    assert_same(lanes, priced)
    twin = reference.score_pairs(
        sites, rows, reference.site_table(sites, rows), k=3, w_cost=1.0, fit_market=0.25, dual=dual
    )
    assert_same(priced, twin)
    # Same eligibility; every reduced value is at most the plain value of the same pair.
    np.testing.assert_array_equal(priced.counts, got.counts)
    plain = {
        (j, int(s)): int(v)
        for j in range(rows.n_rows)
        for s, v in zip(
            got.cand_site[got.cand_ptr[j] : got.cand_ptr[j + 1]],
            got.cand_value[got.cand_ptr[j] : got.cand_ptr[j + 1]],
            strict=True,
        )
    }
    for j in range(rows.n_rows):
        for s, v in zip(
            priced.cand_site[priced.cand_ptr[j] : priced.cand_ptr[j + 1]],
            priced.cand_value[priced.cand_ptr[j] : priced.cand_ptr[j + 1]],
            strict=True,
        ):
            if (j, int(s)) in plain:
                assert v <= plain[(j, int(s))]


# ---------------------------------------------------------------- long lists: blocks and lanes
# The kernels sort each category x class list into lanes and look at a row's top-K only in
# the blocks of lanes that can hold a kept value; with a few dozen sites every block is
# looked at, so these tests use lists of hundreds of sites, where most blocks are skipped.
# The pair-by-pair walk (the kernel this one replaced) is the second yardstick.


def walk(sites, rows, k, dual=None, w_cost=1.0, fit_market=0.25):
    words = kernels.group_words(sites, rows)
    kw = {"k": k, "w_cost": w_cost, "fit_market": fit_market, "dual": dual}
    return score_pairs_walk(sites, rows, words, **kw)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("k", [1, 4, 16])
def test_long_lists_match_twin_and_walk(seed, k):
    rng = np.random.default_rng(1000 + seed)
    sites, rows = random_arrays(
        rng, 30, 900, months=3, n_groups=3, n_cdmo=1 + seed % 3, ties=seed % 2 == 0
    )
    got = both(sites, rows, k)
    assert_same(got, walk(sites, rows, k))
    check_invariants(got, rows, k)
    # Long enough that the top-K skips blocks: many more eligible sites than k + 2 blocks.
    assert got.counts[:, ELIGIBLE].max() > 8 * (k + 2) * kernels.BLOCK // 16


@pytest.mark.parametrize("seed", range(4))
def test_long_lists_with_dual_prices_match_twin_and_walk(seed):
    rng = np.random.default_rng(2000 + seed)
    sites, rows = random_arrays(rng, 25, 700, months=3, n_groups=3, ties=False)
    dual = rng.integers(0, 8, size=sites.free.shape) / 4.0  # quarter units: exact sums
    words = kernels.group_words(sites, rows)
    got = score_pairs_lanes(sites, rows, words, k=4, w_cost=1.0, fit_market=0.25, dual=dual)
    table = reference.site_table(sites, rows)
    twin = reference.score_pairs(sites, rows, table, k=4, w_cost=1.0, fit_market=0.25, dual=dual)
    assert_same(got, twin)
    assert_same(got, walk(sites, rows, 4, dual=dual))


def one_cdmo_market(n_rows=6, n_sites=400):
    """Every site serves every row; site 0 is the best and the values fall with the index;
    only the last site belongs to a second CDMO."""
    rng = np.random.default_rng(7)
    sites, rows = random_arrays(rng, n_rows, n_sites, n_cdmo=1)
    sites = dataclasses.replace(
        sites,
        cc=np.full(n_sites, 0xFFFFFFF, np.uint32),
        word0=np.full(n_sites, 0x3FF << 16 | 0x1F << 10, np.uint32),
        free=np.full_like(sites.free, 100),
        cdmo=np.r_[np.zeros(n_sites - 1), 1].astype(np.int32),
        fitq=np.linspace(0.0, 1.0, n_sites)[::-1].copy(),
        price=np.zeros_like(sites.price),
    )
    rows = dataclasses.replace(
        no_loads(rows),
        req=np.zeros(n_rows, np.uint32),
        excl_ptr=np.zeros(n_rows + 1, np.int64),
        excl=np.zeros(0, np.int32),
        budget=np.full(n_rows, np.inf),
        a=np.full(n_rows, 100.0),
        b=np.full(n_rows, 1000.0),
        force=np.full((n_rows, 2), -1, np.int32),
        alt=np.ones(n_rows, bool),
        prev=np.full(n_rows, -1, np.int32),
        stab=np.zeros(n_rows),
        tmask=np.zeros(n_rows, np.uint32),
    )
    return sites, rows


def test_alternative_cdmo_found_far_below_the_top_blocks():
    # The only site of another CDMO is the worst of 400: the blocks that can hold the top-K
    # are all of the best's CDMO, so the kernels must look further for the alternative.
    sites, rows = one_cdmo_market()
    sc = both(sites, rows, 4)
    for j in range(rows.n_rows):
        assert sc.cand_site[sc.cand_ptr[j] : sc.cand_ptr[j + 1]].tolist() == [0, 1, 2, 3, 399]
    full = reference.evaluate(sites, rows, k=400, w_cost=1.0, fit_market=0.25)
    assert full.cand_site[4] == 4 and np.all(sc.outside_best == full.cand_value[4])
    assert_same(sc, walk(sites, rows, 4))


def test_forced_sites_far_below_the_top_blocks_are_kept():
    sites, rows = one_cdmo_market()
    rows = dataclasses.replace(
        rows,
        alt=np.zeros(rows.n_rows, bool),
        force=np.tile(np.array([[350, 200]], np.int32), (rows.n_rows, 1)),
        prev=np.full(rows.n_rows, 350, np.int32),
        stab=np.full(rows.n_rows, 5.0),
    )
    sc = both(sites, rows, 3)
    for j in range(rows.n_rows):
        assert sc.cand_site[sc.cand_ptr[j] : sc.cand_ptr[j + 1]].tolist() == [0, 1, 2, 200, 350]
    assert_same(sc, walk(sites, rows, 3))


def test_generated_market_matches_walk():
    snap = generate_market(1500, 400, months=12, seed=11)
    enc = encode(snap, RunParams())
    kw = {"k": 16, "w_cost": 0.01, "fit_market": FIT_MARKET}
    got = score_pairs_lanes(enc.sites, enc.rows, enc.words, **kw)
    assert got.counts[:, ELIGIBLE].sum() > 0
    assert_same(got, score_pairs_walk(enc.sites, enc.rows, enc.words, **kw))
    dual = np.random.default_rng(3).integers(0, 4, size=enc.sites.free.shape) / 8.0
    got = score_pairs_lanes(enc.sites, enc.rows, enc.words, dual=dual, **kw)
    assert_same(got, score_pairs_walk(enc.sites, enc.rows, enc.words, dual=dual, **kw))
    # Rows of a task that repeat the previous row's requirements reuse its masks: this
    # market has some (the tests above hold the bits either way).
    order = np.lexsort((enc.rows.req, enc.rows.group))
    key = enc.rows.group[order].astype(np.int64) << 32 | enc.rows.req[order]
    assert np.count_nonzero(key[1:] == key[:-1]) > enc.rows.n_rows // 30  # 98 of 1559


def test_a_kept_lane_layout_scores_as_a_fresh_one():
    """``Encoded.lanes`` keeps one layout for every pass of a run: a pass with dual prices
    adds them to a copy, and the next pass without them scores as a fresh layout would."""
    rng = np.random.default_rng(31)
    sites, rows = random_arrays(rng, 25, 700, months=3, n_groups=3, ties=False)
    words = kernels.group_words(sites, rows)
    layout = kernels.lanes(sites, rows, words)
    dual = rng.integers(0, 8, size=sites.free.shape) / 4.0
    kw = {"k": 4, "w_cost": 1.0, "fit_market": 0.25}
    for d in (None, dual, None):
        kept = score_pairs_lanes(sites, rows, words, layout=layout, dual=d, **kw)
        assert_same(kept, score_pairs_lanes(sites, rows, words, dual=d, **kw))
        assert_same(kept, walk(sites, rows, 4, dual=d))
    assert layout.dual.shape[0] == 0
