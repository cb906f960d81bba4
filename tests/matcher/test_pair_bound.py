"""The Lagrangian bound solves each linked pair exactly (matcher.bound): valid on random models
with pair rules (brute force), and exact where only the pair rules bind."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_solver import brute_force, make_model

from matcher.bound import lagrangian_bound
from matcher.model import NONE, AssignmentModel, restrict
from matcher.solver import SolverParams, solve
from matcher.verify import verify_assignment


def _region_pair(budget: int | None = None) -> AssignmentModel:
    """Items 0 and 1 linked; bins 0 and 1 (CDMOs 0 and 1) in region A, bin 2 (CDMO 2) in B.
    Resources 0-2: each bin's capacity (never binding); 3, 4: the pair's region A and B
    slots (capacity 1); 5: the pair's budget (uses = costs)."""
    a, b, bud = 3, 4, 5
    items = [
        [(0, 100, [(0, 1), (a, 1), (bud, 100)]), (2, 10, [(2, 1), (b, 1), (bud, 10)])],
        [(1, 100, [(1, 1), (a, 1), (bud, 100)]), (2, 10, [(2, 1), (b, 1), (bud, 10)])],
    ]
    cap = [5, 5, 5, 1, 1, 10**6 if budget is None else budget]
    model = make_model(items, cap, partner=[1, 0], groups=[0, 1, 2])
    return replace(model, side_from=3)


def test_region_rule_is_exact_in_the_pair_subproblem():
    # Without the rule both would take their 100 in region A (200); with it, 110 at most.
    model = _region_pair()
    bound, prices = lagrangian_bound(model, None, iterations=200, time_limit_s=None)
    assert brute_force(model) == 110
    assert bound == 110
    assert np.all(prices[model.side_from :] == 0)  # pair rules are never priced


def test_blended_budget_is_exact_in_the_pair_subproblem():
    # Budget 109: 100 + 10 no longer fits, 10 + 10 would but is in one region: nothing fits.
    assert brute_force(_region_pair(budget=109)) == 0
    bound, _ = lagrangian_bound(_region_pair(budget=109), None, iterations=50, time_limit_s=None)
    assert bound == 0
    bound, _ = lagrangian_bound(_region_pair(budget=110), None, iterations=50, time_limit_s=None)
    assert bound == 110


def test_pair_rules_survive_restrict_and_the_solver_obeys_them():
    model = _region_pair()
    sub, _ = restrict(model, np.array([0, 1]), model.capacity)
    assert sub.side_from == 3
    solution = solve(model, SolverParams(time_limit_s=5.0, workers=1, seed=0))
    assert verify_assignment(model, solution.choice) == solution.objective == 110
    assert solution.bound == 110


@st.composite
def pair_models(draw: st.DrawFn) -> AssignmentModel:
    """Items 0 and 1 linked, with region slots and a budget as pair-rule resources."""
    n_items = draw(st.integers(2, 4))
    n_bins = draw(st.integers(2, 4))
    n_site = n_bins * 2
    region = draw(st.lists(st.integers(0, 1), min_size=n_bins, max_size=n_bins))
    apart = draw(st.booleans())
    budget_key = n_site + 2
    items = []
    for i in range(n_items):
        bins = draw(st.lists(st.integers(0, n_bins - 1), min_size=0, max_size=3, unique=True))
        cands = []
        for b in bins:
            uses = [(2 * b + k, draw(st.integers(0, 6))) for k in range(2)]
            if i < 2:
                if apart:
                    uses.append((n_site + region[b], 1))
                uses.append((budget_key, draw(st.integers(0, 8))))
            cands.append((b, draw(st.integers(-5, 20)), uses))
        items.append(cands)
    capacity = draw(st.lists(st.integers(0, 10), min_size=n_site, max_size=n_site))
    capacity += [1, 1, draw(st.integers(0, 15))]
    partner = [1, 0] + [NONE] * (n_items - 2)
    groups = draw(st.lists(st.integers(0, 2), min_size=n_bins, max_size=n_bins))
    outside = draw(
        st.lists(st.sampled_from([-(10**12), 0, 3, 15]), min_size=n_items, max_size=n_items)
    )
    model = make_model(items, capacity, partner=partner, groups=groups, outside=outside)
    return replace(model, side_from=n_site)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pair_models())
def test_pair_lagrangian_is_an_upper_bound(model: AssignmentModel) -> None:
    optimum = brute_force(model)
    bound, prices = lagrangian_bound(model, None, iterations=200, time_limit_s=None)
    assert np.all(prices >= 0) and np.all(prices[model.side_from :] == 0)
    if optimum is not None:
        assert bound >= optimum
    solution = solve(model, SolverParams(time_limit_s=5.0, workers=1, seed=0))
    if optimum is not None:
        assert verify_assignment(model, solution.choice) == solution.objective == optimum
        assert solution.bound >= optimum


def test_assembled_uses_are_each_candidates_loads_then_its_pair_rules(monkeypatch):
    """The model's uses, written in chunks of candidates, are exactly: each candidate's
    row's positive loads at its site, then its side uses (pair rules), which come last (the
    bound's pair check relies on it)."""
    from matcher import problem as problem_module
    from matcher.generate import generate_market
    from matcher.pairs import side_uses
    from matcher.problem import N_PROC, build_problem
    from schemas.market import RunParams

    monkeypatch.setattr(problem_module, "CANDS_PER_CHECK", 97)  # dozens of chunks
    prob = build_problem(generate_market(400, 40, 12, seed=5), RunParams())
    m, enc, rows = prob.model, prob.enc, prob.enc.rows
    region = np.log2(enc.sites.region_bit.astype(np.float64)).astype(np.int64)
    side_cand, side_key, side_amt, side_cap = side_uses(
        enc.project_rows, enc.row_project, enc.project_apart_region, enc.project_budget,
        region, prob.scored.cand_ptr, prob.scored.cand_site, prob.scored.cand_cost,
        enc.sites.free.size,
    )  # fmt: skip
    assert len(side_cap) > 0 and m.side_from < m.n_res  # the market has pair rules
    pt = N_PROC * enc.n_months
    cand_row = m.cand_item()
    for c in range(m.n_cand):
        r, s = cand_row[c], int(m.cand_bin[c])
        ents = [e for e in range(rows.ent_ptr[r], rows.ent_ptr[r + 1]) if rows.ent_units[e] > 0]
        want = [(s * pt + int(rows.ent_off[e]), int(rows.ent_units[e])) for e in ents]
        want += [
            (int(k), int(a))
            for k, a in zip(side_key[side_cand == c], side_amt[side_cand == c], strict=True)
        ]
        uses = range(m.use_ptr[c], m.use_ptr[c + 1])
        got = [(int(prob.res_key[m.use_res[u]]), int(m.use_amt[u])) for u in uses]
        assert got == want, c
        kinds = [int(m.use_res[u]) >= m.side_from for u in uses]
        assert kinds == sorted(kinds)  # site uses first, pair rules last
    site = prob.res_key[: m.side_from]
    assert np.array_equal(m.capacity[: m.side_from], enc.sites.free.reshape(-1)[site])
    assert [side_cap[int(k)] for k in prob.res_key[m.side_from :]] == m.capacity[
        m.side_from :
    ].tolist()
