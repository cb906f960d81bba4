"""encode.py: the site table is independent of the projects' horizon; pricing.value_parts."""

from __future__ import annotations

import numpy as np

from matcher.encode import encode, encode_sites
from matcher.generate import generate_market
from matcher.pricing import value_parts
from matcher.problem import build_problem
from schemas.market import RunParams

PARAMS = RunParams()


def _same_arrays(a, b) -> None:
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        assert np.array_equal(x, y), name


def test_cached_site_table_gives_the_same_encoding_for_any_projects():
    snap = generate_market(projects=120, sites=30, months=12, seed=3)
    table = encode_sites(snap)  # cached once per market version
    # Projects over a few months only: the horizon is narrower than the listings' span.
    few = snap.model_copy(update={"projects": snap.projects[:5]})
    for s in (snap, few):
        fresh = encode(s, PARAMS)
        cached = encode(s, PARAMS, site_table=table)
        assert fresh.n_months == cached.n_months and fresh.horizon_start == cached.horizon_start
        _same_arrays(fresh.sites, cached.sites)
        _same_arrays(fresh.rows, cached.rows)


def test_horizon_past_the_listings_has_no_capacity_there():
    snap = generate_market(projects=40, sites=10, months=6, seed=1)
    table = encode_sites(snap)
    wide = table.over(table.h0 - 2, table.months + 4)
    pt = wide.free.shape[1] // 10  # months per process
    free = wide.free.reshape(len(wide.cc), 10, pt)
    assert not free[:, :, :2].any() and not free[:, :, -2:].any()
    assert np.array_equal(free[:, :, 2:-2], table.free)


def test_value_parts_add_up_to_the_kernels_value():
    snap = generate_market(projects=200, sites=40, months=12, seed=5)
    prob = build_problem(snap, PARAMS)
    m = prob.model
    rows = m.cand_item()
    parts = value_parts(prob.enc, PARAMS, rows, m.cand_bin, prob.cand_cost)
    assert np.array_equal(parts.value, m.cand_value)  # bit-identical to the kernels
    total = parts.priority + parts.fit + parts.cost + parts.stability
    assert np.all(np.abs(total - m.cand_value) <= 0.5 + 1e-6)
    assert np.all(parts.fit >= 0) and np.all(parts.cost <= 0)
