"""Capacity listings: creation rules, optimistic concurrency (ETag / If-Match), filters."""

from __future__ import annotations

import threading

from service_testkit import Api, Tenant, assert_problem, listing_body, ok


def _site_and_listing(api: Api) -> tuple[Tenant, dict, dict]:
    cdmo = api.cdmo()
    site = api.site(cdmo)
    return cdmo, site, api.listing(cdmo, site["id"])


def test_create_and_read(api: Api) -> None:
    cdmo, site, listing = _site_and_listing(api)
    assert listing["site_id"] == site["id"] and listing["cdmo_id"] == cdmo.id
    assert listing["free_hours"] == 450.0 and listing["version"] == 1
    response = cdmo.get(f"/v1/listings/{listing['id']}")
    assert ok(response) == listing
    assert response.headers["etag"] == '"1"'


def test_one_listing_per_site_process_month(api: Api) -> None:
    cdmo, site, listing = _site_and_listing(api)
    before = api.market_version()
    problem = assert_problem(
        cdmo.post(f"/v1/sites/{site['id']}/listings", json=listing_body()), 409, "conflict"
    )
    assert problem["existing_id"] == listing["id"]
    assert api.market_version() == before
    ok(cdmo.post(f"/v1/sites/{site['id']}/listings", json=listing_body(month="2027-02")), 201)


def test_listing_needs_a_process_the_site_runs(api: Api) -> None:
    cdmo = api.cdmo()
    site = api.site(cdmo)
    problem = assert_problem(
        cdmo.post(f"/v1/sites/{site['id']}/listings", json=listing_body(process="pcb_assembly")),
        422,
        "validation-error",
    )
    assert problem["errors"][0]["field"] == "process"


def test_put_requires_if_match_and_rejects_stale_versions(api: Api) -> None:
    cdmo, _site, listing = _site_and_listing(api)
    url = f"/v1/listings/{listing['id']}"
    new = {"capacity_hours": 600, "reserved_hours": 0, "price_per_hour": 90}
    assert_problem(cdmo.put(url, json=new), 428, "precondition-required")
    assert_problem(cdmo.put(url, json=new, headers={"If-Match": "*"}), 428, "precondition-required")
    assert_problem(
        cdmo.put(url, json=new, headers={"If-Match": 'W/"1"'}), 412, "precondition-failed"
    )
    assert_problem(
        cdmo.put(url, json=new, headers={"If-Match": "nonsense"}), 422, "validation-error"
    )
    response = cdmo.put(url, json=new, headers={"If-Match": '"1"'})
    assert ok(response)["capacity_hours"] == 600 and response.headers["etag"] == '"2"'
    # a list of tags matches if any does
    response = cdmo.put(url, json={**new, "capacity_hours": 650}, headers={"If-Match": '"9", "2"'})
    assert ok(response)["version"] == 3


def test_two_writers_one_stale_never_overwrites(api: Api) -> None:
    cdmo, _site, listing = _site_and_listing(api)
    url = f"/v1/listings/{listing['id']}"
    etag = cdmo.get(url).headers["etag"]  # both writers read version 1
    first = cdmo.patch(url, json={"capacity_hours": 700}, headers={"If-Match": etag})
    second = cdmo.patch(url, json={"price_per_hour": 10}, headers={"If-Match": etag})
    assert ok(first)["capacity_hours"] == 700
    problem = assert_problem(second, 412, "precondition-failed")
    assert problem["current_version"] == 2
    assert second.headers["etag"] == '"2"'
    now = ok(cdmo.get(url))
    assert now["capacity_hours"] == 700 and now["price_per_hour"] == 80 and now["version"] == 2


def test_concurrent_writers_with_the_same_etag_exactly_one_wins(api: Api) -> None:
    cdmo, _site, listing = _site_and_listing(api)
    url = f"/v1/listings/{listing['id']}"
    writers = 6
    barrier = threading.Barrier(writers)
    results: dict[int, int] = {}

    def write(i: int) -> None:
        barrier.wait()
        response = cdmo.put(
            url,
            json={"capacity_hours": 1000 + i, "reserved_hours": 0, "price_per_hour": 50},
            headers={"If-Match": '"1"'},
        )
        results[i] = response.status_code

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(results.values()) == [200] + [412] * (writers - 1), results
    winner = next(i for i, status in results.items() if status == 200)
    final = ok(cdmo.get(url))
    assert final["version"] == 2
    assert final["capacity_hours"] == 1000 + winner


def test_capacity_cannot_go_below_what_is_reserved(api: Api) -> None:
    cdmo, _site, listing = _site_and_listing(api)
    url = f"/v1/listings/{listing['id']}"
    problem = assert_problem(
        cdmo.patch(url, json={"capacity_hours": 10}, headers={"If-Match": '"1"'}),
        409,
        "capacity-held",
    )
    assert problem["reserved_hours"] == 50 and "50 h reserved" in problem["detail"]
    assert ok(cdmo.get(url))["version"] == 1


def test_delete_listing(api: Api) -> None:
    cdmo, _site, listing = _site_and_listing(api)
    url = f"/v1/listings/{listing['id']}"
    assert_problem(cdmo.delete(url, headers={"If-Match": '"5"'}), 412, "precondition-failed")
    assert cdmo.delete(url, headers={"If-Match": '"1"'}).status_code == 204
    assert_problem(cdmo.get(url), 404, "not-found")


def test_filters_and_site_listing_collection(api: Api) -> None:
    cdmo = api.cdmo()
    s1, s2 = api.site(cdmo), api.site(cdmo, name="Second")
    ids = {}
    for month in ("2027-01", "2027-02", "2027-03"):
        ids[month] = api.listing(cdmo, s1["id"], month=month)["id"]
    other = api.listing(cdmo, s2["id"], process="final_test")["id"]

    def got(path: str) -> set[str]:
        return {x["id"] for x in ok(cdmo.get(path))["items"]}

    assert got("/v1/listings") == set(ids.values()) | {other}
    assert got(f"/v1/sites/{s1['id']}/listings") == set(ids.values())
    assert got(f"/v1/listings?site_id={s2['id']}") == {other}
    assert got("/v1/listings?process=final_test") == {other}
    assert got("/v1/listings?month_from=2027-02&month_to=2027-02") == {ids["2027-02"]}
    assert got(f"/v1/sites/{s1['id']}/listings?month_from=2027-02") == {
        ids["2027-02"],
        ids["2027-03"],
    }
    assert_problem(cdmo.get("/v1/listings?month_from=2027-13"), 422, "validation-error")


def test_every_listing_write_bumps_the_market_version(api: Api) -> None:
    cdmo, _site, listing = _site_and_listing(api)
    url = f"/v1/listings/{listing['id']}"
    v0 = api.market_version()
    ok(cdmo.patch(url, json={"capacity_hours": 900}, headers={"If-Match": '"1"'}))
    v1 = api.market_version()
    assert_problem(
        cdmo.patch(url, json={"capacity_hours": 901}, headers={"If-Match": '"1"'}),
        412,
        "precondition-failed",
    )
    assert api.market_version() == v1 > v0
