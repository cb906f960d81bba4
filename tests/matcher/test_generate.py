"""The synthetic market: deterministic, valid, and shaped like the domain says."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest

from matcher.generate import generate_market
from schemas.market import DeviceCategory, MarketSnapshot, Region, month_end


@pytest.fixture(scope="module")
def market() -> MarketSnapshot:
    return generate_market(1500, 400, months=12, seed=7)


def test_same_seed_same_market_other_seed_other_market():
    a = generate_market(50, 20, months=6, seed=1)
    assert a.model_dump_json() == generate_market(50, 20, months=6, seed=1).model_dump_json()
    assert a.model_dump_json() != generate_market(50, 20, months=6, seed=2).model_dump_json()


def test_generated_snapshot_passes_full_validation(market):
    # model_construct skips validation; a JSON round trip through the validators must agree.
    again = MarketSnapshot.model_validate_json(market.model_dump_json())
    assert again == market


def test_sizes_and_horizon(market):
    assert len(market.projects) == 1500 and len(market.sites) == 400
    months = {x.month for x in market.listings}
    assert min(months) == "2026-01" and max(months) == "2026-12"
    assert all("2026-01" <= p.window_start <= p.window_end <= "2026-12" for p in market.projects)


def test_mostly_chinese_sites_some_overseas_and_western(market):
    regions = Counter(s.region for s in market.sites)
    assert regions[Region.CN] > 0.6 * len(market.sites)
    overseas = [s for s in market.sites if s.overseas]
    assert overseas and all(s.region != Region.CN for s in overseas)
    assert {s.region for s in overseas} >= {Region.EU, Region.US, Region.SEA}
    cities = Counter(s.name.split(" ", 1)[1] for s in market.sites if s.region == Region.CN)
    assert {"Shenzhen", "Shanghai", "Suzhou", "Beijing"} <= set(cities)
    assert any(s.region in (Region.US, Region.EU) and not s.overseas for s in market.sites)


def test_consumables_are_the_most_common_category(market):
    cats = Counter(p.category for p in market.projects)
    assert cats.most_common(1)[0][0] == DeviceCategory.CONSUMABLES
    assert set(cats) == set(DeviceCategory)


def test_some_certificates_expire_inside_the_horizon(market):
    end = month_end("2026-12")
    certs = [c for s in market.sites for c in s.certifications]
    expiring = [c for c in certs if dt.date(2026, 1, 1) <= c.valid_until < end]
    assert 0.05 * len(certs) < len(expiring) < 0.4 * len(certs)


def test_capacity_dips_at_chinese_new_year_and_overseas_prices_are_higher(market):
    region = {s.id: s.region for s in market.sites}
    cn = [x for x in market.listings if region[x.site_id] == Region.CN]
    feb = sum(x.capacity_hours for x in cn if x.month == "2026-02")
    mar = sum(x.capacity_hours for x in cn if x.month == "2026-03")
    assert feb < 0.75 * mar
    assert any(x.reserved_hours > 0 for x in market.listings)

    def mean_price(regions):
        xs = [x.price_per_hour for x in market.listings if region[x.site_id] in regions]
        return sum(xs) / len(xs)

    assert mean_price({Region.US, Region.EU}) > 2 * mean_price({Region.CN})


def test_project_features_appear(market):
    ps = market.projects
    assert all(1 <= len(p.loads) <= 4 for p in ps)
    assert any(p.second_source_required for p in ps)
    assert any(p.excluded_cdmo_ids for p in ps)
    assert any(p.budget_ceiling for p in ps)
    markets = Counter(m for p in ps for m in p.target_markets)
    assert markets[Region.CN] > markets[Region.US] > 0 and markets[Region.EU] > 0


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        generate_market(1, 1, months=0)
    with pytest.raises(ValueError):
        generate_market(1, 1, start="2026-13")


def test_zero_sizes():
    snap = generate_market(0, 0, months=3)
    assert snap.projects == [] and snap.sites == [] and snap.listings == []
