"""`cdmo seed` and the demo marketplace of `cdmo serve --demo` (loaded idempotently)."""

from __future__ import annotations

import datetime as dt

from service_testkit import Api, Tenant, ok

from schemas.market import MarketSnapshot, month_index
from service.demo import ORGS, load_demo
from service.seed import seed_operator


def test_seed_creates_one_operator_and_prints_a_working_key_once(api: Api) -> None:
    db = api.backend.db
    secret = api.backend.settings.auth.hmac_secret.get_secret_value()
    first = seed_operator(db, secret=secret)
    assert first.created_org and first.key and first.key.startswith("ck_")
    operator = Tenant(first.org_id, "operator", "op", first.key, api.client)
    me = ok(operator.get("/v1/orgs/me"))
    assert me["kind"] == "operator"
    again = seed_operator(db, secret=secret)
    assert again.org_id == first.org_id and not again.created_org and again.key is None
    rotated = seed_operator(db, secret=secret, new_key=True)
    assert rotated.key and rotated.key != first.key
    keys = ok(operator.get(f"/v1/orgs/{first.org_id}/keys"))["items"]
    assert len(keys) == 2
    assert len(ok(operator.get("/v1/orgs?kind=operator"))["items"]) == 1


def test_demo_marketplace_is_realistic_and_loads_idempotently(api: Api) -> None:
    db = api.backend.db
    secret = api.backend.settings.auth.hmac_secret.get_secret_value()
    today = dt.date(2026, 11, 22)
    keys = load_demo(db, secret=secret, today=today)
    assert len(keys) == len(ORGS) == 9
    op_key = next(k for who, k in keys.items() if who.startswith("operator"))
    operator = Tenant("org_demo_operator", "operator", "demo", op_key, api.client)
    snap = MarketSnapshot.model_validate(ok(operator.get("/v1/market/snapshot?as_of=2026-11-22")))
    assert len(snap.projects) == 11  # a dozen, one of them still a draft
    assert len(snap.sites) == 9
    months = {x.month for x in snap.listings}
    assert len(months) == 12 and min(months) == "2026-11" and max(months) == "2027-10"
    overseas = {s.region for s in snap.sites if s.overseas}
    assert overseas == {"EU", "US", "SEA"}
    # some certificates run out within the listing horizon
    horizon = dt.date(2027, 10, 31)
    assert any(c.valid_until < horizon for s in snap.sites for c in s.certifications)
    for project in snap.projects:
        assert month_index(project.window_end) <= month_index("2027-10")

    # every demo key works and sees its own tenant
    for who, key in keys.items():
        kind = who.split()[0]
        me = ok(Tenant("?", kind, who, key, api.client).get("/v1/orgs/me"))
        assert me["kind"] == kind
    cdmo_key = keys[next(w for w in keys if "Suzhou" in w)]
    sites = ok(Tenant("?", "cdmo", "s", cdmo_key, api.client).get("/v1/sites"))["items"]
    assert {s["country"] for s in sites} == {"CN", "HU", "MY"}

    version = snap.version
    assert load_demo(db, secret=secret, today=today) == keys  # same keys, nothing added
    again = MarketSnapshot.model_validate(ok(operator.get("/v1/market/snapshot")))
    assert again.version == version
    assert (len(again.projects), len(again.listings)) == (len(snap.projects), len(snap.listings))
    # a month later the next month's listings are added, nothing else
    load_demo(db, secret=secret, today=dt.date(2026, 12, 5))
    later = MarketSnapshot.model_validate(ok(operator.get("/v1/market/snapshot")))
    assert later.version == version + 1
    assert max(x.month for x in later.listings) == "2027-11"
    assert len(later.projects) == len(snap.projects)
