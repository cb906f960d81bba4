"""Instant candidates hold to the batch: same eligibility, values, costs and rules as the
candidate lists ``build_problem`` gives the optimiser, on the same market."""

from __future__ import annotations

import numpy as np
import pytest

from matcher import reference
from matcher.candidates import SiteSide, instant_candidates
from matcher.generate import generate_market
from matcher.kernels import ELIGIBLE, RULES
from matcher.problem import build_problem
from schemas.api.candidates import CandidateRule
from schemas.market import MarketSnapshot, Role, RunParams

K = 8


@pytest.fixture(scope="module", params=[3, 11])
def market(request: pytest.FixtureRequest) -> MarketSnapshot:
    # A tight market: capacity and budget exclude sites, not only certificates and markets.
    return generate_market(80, 400, months=12, seed=request.param, capacity_scale=0.05)


def _batch_rows(problem, j: int) -> list[int]:  # type: ignore[no-untyped-def]
    return [int(r) for r in problem.enc.project_rows[j] if r >= 0]


def test_candidates_are_the_batch_candidate_lists(market: MarketSnapshot) -> None:
    params = RunParams(candidates_per_project=K)
    problem = build_problem(market, params)
    scored, enc = problem.scored, problem.enc
    side = SiteSide.from_snapshot(market)
    compared = near = 0
    for j, project in enumerate(market.projects):
        out = instant_candidates(side, project, limit=K, params=params, project_id=project.id)
        rows = _batch_rows(problem, j)
        assert [s.role for s in out.sources] == [Role.PRIMARY, Role.SECOND_SOURCE][: len(rows)]
        for r, source in zip(rows, out.sources, strict=True):
            assert source.share == pytest.approx(enc.row_share[r])
            counts = scored.counts[r]
            assert source.counts.model_dump() == {
                **{rule: int(counts[i]) for i, rule in enumerate(RULES)},
                "eligible": int(counts[ELIGIBLE]),
            }
            lo, hi = scored.cand_ptr[r], scored.cand_ptr[r + 1]
            n = min(K, hi - lo)  # beyond K the batch may add its alternative-CDMO site
            batch = [
                (enc.site_ids[s], int(v), float(c))
                for s, v, c in zip(
                    scored.cand_site[lo : lo + n],
                    scored.cand_value[lo : lo + n],
                    scored.cand_cost[lo : lo + n],
                    strict=True,
                )
            ]
            assert [(c.site_id, c.value, c.cost) for c in source.candidates] == batch
            for c in source.candidates:
                assert c.capacity_suffices
                parts = c.value_parts
                total = parts.priority + parts.quality + parts.market + parts.cost
                assert np.floor(total + parts.stability + 0.5) == c.value
            compared += len(batch)
            # Each near miss fails exactly the rule it names, by the batch's own rules
            # (the NumPy twin of the kernels): the first rule it fails is that rule.
            if source.near_misses:
                site_idx = [enc.site_ids.index(m.site_id) for m in source.near_misses]
                first = reference.first_failed_rules(enc.sites, enc.rows, np.array([r]))[0]
                for m, s in zip(source.near_misses, site_idx, strict=True):
                    assert RULES[first[s]] == m.rule.value, (project.id, m)
                    assert m.site_id not in {c.site_id for c in source.candidates}
                    near += 1
                    if m.rule == CandidateRule.CAPACITY:
                        assert not m.capacity_suffices and m.detail.startswith("short")
                    else:
                        assert m.capacity_suffices
        assert out.placeable == all(s.counts.eligible for s in out.sources) or any(
            b.rule == CandidateRule.SECOND_SOURCE_SEPARATION for b in out.blockers
        )
    assert compared > 100 and near > 20  # the comparison covered real lists


def test_near_misses_are_best_first_and_one_rule_each(market: MarketSnapshot) -> None:
    side = SiteSide.from_snapshot(market)
    seen_rules: set[CandidateRule] = set()
    for project in market.projects[:40]:
        out = instant_candidates(side, project, limit=5)
        for source in out.sources:
            values = [(-m.value, m.site_id) for m in source.near_misses]
            assert len(values) <= 5
            seen_rules |= {m.rule for m in source.near_misses}
            # Sorted by value desc (site index breaks ties; generated ids sort like indices).
            assert [v for v, _ in values] == sorted(v for v, _ in values)
    assert {CandidateRule.CERTIFICATION, CandidateRule.CAPACITY} <= seen_rules


def test_site_side_is_reused_across_projects_and_horizons(market: MarketSnapshot) -> None:
    side = SiteSide.from_snapshot(market)
    first = instant_candidates(side, market.projects[0], limit=3)
    horizons = len(side.table.horizons)  # type: ignore[attr-defined]
    for project in market.projects[:30]:
        instant_candidates(side, project, limit=3)
    # Projects inside the listings' months share one set of site arrays.
    assert len(side.table.horizons) == horizons == 1  # type: ignore[attr-defined]
    assert instant_candidates(side, market.projects[0], limit=3) == first


def test_limit_must_be_positive(market: MarketSnapshot) -> None:
    with pytest.raises(ValueError):
        instant_candidates(SiteSide.from_snapshot(market), market.projects[0], limit=0)
