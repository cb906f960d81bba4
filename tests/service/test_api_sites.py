"""CDMO sites: create, read, change, delete, filter."""

from __future__ import annotations

from service_testkit import Api, assert_problem, ok, site_body


def test_cdmo_creates_and_reads_its_site(api: Api) -> None:
    cdmo = api.cdmo()
    response = cdmo.post("/v1/sites", json=site_body())
    site = ok(response, 201)
    assert response.headers["location"] == f"/v1/sites/{site['id']}"
    assert site["cdmo_id"] == cdmo.id and site["version"] == 1
    assert site["certifications"][0]["valid_until"] == "2029-12-31"
    assert site["quality"] == {"inspection_findings": 1, "on_time_rate": 0.97, "lead_time_weeks": 4}
    assert ok(cdmo.get(f"/v1/sites/{site['id']}")) == site


def test_operator_creates_a_site_for_a_cdmo_only(api: Api) -> None:
    cdmo, maker = api.cdmo(), api.maker()
    site = ok(api.operator.post("/v1/sites", json=site_body(cdmo_id=cdmo.id)), 201)
    assert site["cdmo_id"] == cdmo.id
    assert [s["id"] for s in ok(cdmo.get("/v1/sites"))["items"]] == [site["id"]]
    assert_problem(
        api.operator.post("/v1/sites", json=site_body(cdmo_id=maker.id)), 422, "validation-error"
    )
    assert_problem(api.operator.post("/v1/sites", json=site_body()), 422, "validation-error")
    assert_problem(cdmo.post("/v1/sites", json=site_body(cdmo_id=api.cdmo().id)), 403, "forbidden")


def test_patch_site(api: Api) -> None:
    cdmo = api.cdmo()
    site = api.site(cdmo)
    url = f"/v1/sites/{site['id']}"
    assert_problem(cdmo.patch(url, json={"name": "New"}), 428, "precondition-required")
    certs = [
        {
            "kind": "eu_mdr",
            "issuer": "BSI",
            "device_classes": ["III"],
            "valid_from": "2026-01-01",
            "valid_until": "2027-06-30",
        }
    ]
    body = ok(
        cdmo.patch(url, json={"name": "New", "certifications": certs}, headers={"If-Match": '"1"'})
    )
    assert body["name"] == "New" and body["version"] == 2
    assert body["certifications"][0]["kind"] == "eu_mdr" and len(body["certifications"]) == 1
    assert body["processes"] == site["processes"]
    # the merged site must still be consistent
    assert_problem(
        cdmo.patch(url, json={"country": "DE"}, headers={"If-Match": '"2"'}),
        422,
        "validation-error",
    )
    body = ok(
        cdmo.patch(
            url,
            json={"country": "DE", "region": "EU", "overseas": True},
            headers={"If-Match": '"2"'},
        )
    )
    assert (body["country"], body["region"], body["overseas"]) == ("DE", "EU", True)


def test_delete_site_removes_its_listings(api: Api) -> None:
    cdmo = api.cdmo()
    site = api.site(cdmo)
    listing = api.listing(cdmo, site["id"])
    assert cdmo.delete(f"/v1/sites/{site['id']}", headers={"If-Match": '"1"'}).status_code == 204
    assert_problem(cdmo.get(f"/v1/sites/{site['id']}"), 404, "not-found")
    assert_problem(cdmo.get(f"/v1/listings/{listing['id']}"), 404, "not-found")
    assert ok(api.operator.get("/v1/listings"))["items"] == []


def test_site_filters(api: Api) -> None:
    cdmo = api.cdmo()
    cn = api.site(cdmo)
    eu = api.site(
        cdmo,
        name="Budapest",
        country="HU",
        region="EU",
        overseas=True,
        processes=["pcb_assembly"],
        categories=["medical_imaging"],
    )

    def ids(query: str) -> set[str]:
        return {s["id"] for s in ok(api.operator.get(f"/v1/sites?{query}"))["items"]}

    assert ids("") == {cn["id"], eu["id"]}
    assert ids("region=EU") == {eu["id"]}
    assert ids("country=CN") == {cn["id"]}
    assert ids("overseas=true") == {eu["id"]}
    assert ids("process=pcb_assembly") == {eu["id"]}
    assert ids("process=catheter_assembly") == {cn["id"]}
    assert ids("category=medical_imaging") == {eu["id"]}
    assert ids(f"cdmo_id={cdmo.id}&region=CN") == {cn["id"]}
    assert_problem(api.operator.get("/v1/sites?region=MOON"), 422, "validation-error")
