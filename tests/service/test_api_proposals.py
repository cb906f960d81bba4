"""Proposals: created by operators (and later by optimiser batches), decided by CDMOs."""

from __future__ import annotations

from service_testkit import Api, assert_problem, ok


def _with_capacity(api: Api, cdmo, site):  # type: ignore[no-untyped-def]
    """Listings for the default project's window, so accepting can hold its hours."""
    for month in ("2027-01", "2027-02", "2027-03"):
        api.listing(cdmo, site["id"], month=month, capacity_hours=500, reserved_hours=0)
    return site


def _setup(api: Api, **project_overrides):  # type: ignore[no-untyped-def]
    maker, cdmo = api.maker(), api.cdmo()
    site = _with_capacity(api, cdmo, api.site(cdmo))
    project = api.project(maker, **project_overrides)
    return maker, cdmo, site, project


def test_operator_proposes_and_the_project_becomes_proposed(api: Api) -> None:
    maker, cdmo, site, project = _setup(api)
    response = api.operator.post(
        "/v1/proposals", json={"project_id": project["id"], "site_id": site["id"]}
    )
    proposal = ok(response, 201)
    assert response.headers["location"] == f"/v1/proposals/{proposal['id']}"
    assert proposal["cdmo_id"] == cdmo.id and proposal["status"] == "proposed"
    assert proposal["site_name"] == site["name"] and proposal["cdmo_name"] == cdmo.name
    after = ok(maker.get(f"/v1/projects/{project['id']}"))
    assert after["status"] == "proposed" and after["version"] == 2
    # maker and CDMO both see the proposal; the maker through its project too
    assert ok(maker.get(f"/v1/proposals/{proposal['id']}"))["id"] == proposal["id"]
    assert ok(cdmo.get(f"/v1/proposals/{proposal['id']}"))["id"] == proposal["id"]
    listed = ok(maker.get(f"/v1/projects/{project['id']}/proposals"))["items"]
    assert [p["id"] for p in listed] == [proposal["id"]]
    assert_problem(api.maker().get(f"/v1/proposals/{proposal['id']}"), 404, "not-found")
    assert_problem(api.cdmo().get(f"/v1/proposals/{proposal['id']}"), 404, "not-found")


def test_reproposing_the_same_site_is_a_no_op_and_another_site_supersedes(api: Api) -> None:
    _maker, cdmo, site, project = _setup(api)
    first = api.propose(project["id"], site["id"])
    body = {"project_id": project["id"], "site_id": site["id"]}
    again = api.operator.post("/v1/proposals", json=body)
    assert again.status_code == 200 and again.json()["id"] == first["id"]
    other_site = api.site(cdmo, name="Other")
    second = api.propose(project["id"], other_site["id"])
    assert ok(api.operator.get(f"/v1/proposals/{first['id']}"))["status"] == "superseded"
    assert second["status"] == "proposed"


def test_excluded_cdmo_and_unknown_references(api: Api) -> None:
    maker, cdmo = api.maker(), api.cdmo()
    site = api.site(cdmo)
    project = api.project(maker, excluded_cdmo_ids=[cdmo.id])
    before = api.market_version()
    assert_problem(
        api.operator.post(
            "/v1/proposals", json={"project_id": project["id"], "site_id": site["id"]}
        ),
        409,
        "conflict",
    )
    problem = assert_problem(
        api.operator.post("/v1/proposals", json={"project_id": "prj_nope", "site_id": site["id"]}),
        422,
        "validation-error",
    )
    assert problem["errors"][0]["field"] == "project_id"
    assert api.market_version() == before
    assert ok(maker.get(f"/v1/projects/{project['id']}"))["status"] == "open"


def test_second_source_rules(api: Api) -> None:
    _maker, cdmo, site, project = _setup(api)
    assert_problem(
        api.operator.post(
            "/v1/proposals",
            json={"project_id": project["id"], "site_id": site["id"], "role": "second_source"},
        ),
        409,
        "invalid-state",
    )
    maker2 = api.maker()
    dual = api.project(maker2, second_source_required=True)
    api.propose(dual["id"], site["id"])
    same_cdmo = api.site(cdmo, name="Sister site")
    assert_problem(
        api.operator.post(
            "/v1/proposals",
            json={"project_id": dual["id"], "site_id": same_cdmo["id"], "role": "second_source"},
        ),
        409,
        "conflict",
    )
    other = api.site(api.cdmo())
    assert api.propose(dual["id"], other["id"], role="second_source")["role"] == "second_source"


def test_accepting_matches_declining_reopens_and_hides_the_project(api: Api) -> None:
    maker, cdmo, site, project = _setup(api)
    proposal = api.propose(project["id"], site["id"])
    url = f"/v1/proposals/{proposal['id']}"
    assert ok(cdmo.patch(url, json={"status": "accepted"}))["status"] == "accepted"
    assert ok(maker.get(f"/v1/projects/{project['id']}"))["status"] == "matched"
    assert_problem(cdmo.patch(url, json={"status": "declined"}), 409, "invalid-state")
    assert_problem(cdmo.patch(url, json={"status": "withdrawn"}), 403, "forbidden")
    refused = assert_problem(maker.patch(url, json={"status": "accepted"}), 409, "invalid-state")
    assert refused["current_state"] == "accepted"
    assert refused["allowed_moves"] == ["confirmed", "withdrawn"]  # the maker's moves
    assert ok(api.operator.patch(url, json={"status": "withdrawn"}))["status"] == "withdrawn"
    assert ok(maker.get(f"/v1/projects/{project['id']}"))["status"] == "open"
    assert_problem(cdmo.get(f"/v1/projects/{project['id']}"), 404, "not-found")

    second = api.propose(project["id"], site["id"])
    ok(cdmo.patch(f"/v1/proposals/{second['id']}", json={"status": "declined"}))
    assert ok(maker.get(f"/v1/projects/{project['id']}"))["status"] == "open"
    assert_problem(cdmo.get(f"/v1/projects/{project['id']}"), 404, "not-found")
    # the CDMO keeps its own record of the proposal
    assert ok(cdmo.get(f"/v1/proposals/{second['id']}"))["status"] == "declined"
    assert_problem(
        api.cdmo().patch(f"/v1/proposals/{second['id']}", json={"status": "accepted"}),
        404,
        "not-found",
    )


def test_second_source_projects_match_when_both_accept(api: Api) -> None:
    maker, cdmo = api.maker(), api.cdmo()
    cdmo2 = api.cdmo()
    s1 = _with_capacity(api, cdmo, api.site(cdmo))
    s2 = _with_capacity(api, cdmo2, api.site(cdmo2))
    project = api.project(maker, second_source_required=True)
    p1 = api.propose(project["id"], s1["id"])
    p2 = api.propose(project["id"], s2["id"], role="second_source")
    ok(cdmo.patch(f"/v1/proposals/{p1['id']}", json={"status": "accepted"}))
    assert ok(maker.get(f"/v1/projects/{project['id']}"))["status"] == "proposed"
    ok(cdmo2.patch(f"/v1/proposals/{p2['id']}", json={"status": "accepted"}))
    assert ok(maker.get(f"/v1/projects/{project['id']}"))["status"] == "matched"


def test_closing_a_project_withdraws_its_proposals(api: Api) -> None:
    maker, cdmo, site, project = _setup(api)
    proposal = api.propose(project["id"], site["id"])
    ok(
        maker.patch(
            f"/v1/projects/{project['id']}", json={"status": "closed"}, headers={"If-Match": '"2"'}
        )
    )
    assert ok(cdmo.get(f"/v1/proposals/{proposal['id']}"))["status"] == "withdrawn"
    assert_problem(cdmo.get(f"/v1/projects/{project['id']}"), 404, "not-found")
    assert_problem(
        api.operator.post(
            "/v1/proposals", json={"project_id": project["id"], "site_id": site["id"]}
        ),
        409,
        "invalid-state",
    )


def test_sites_with_active_proposals_cannot_be_deleted(api: Api) -> None:
    _maker, cdmo, site, project = _setup(api)
    proposal = api.propose(project["id"], site["id"])
    assert_problem(cdmo.delete(f"/v1/sites/{site['id']}"), 409, "invalid-state")
    ok(cdmo.patch(f"/v1/proposals/{proposal['id']}", json={"status": "declined"}))
    assert cdmo.delete(f"/v1/sites/{site['id']}").status_code == 204
    assert_problem(api.operator.get(f"/v1/proposals/{proposal['id']}"), 404, "not-found")


def test_proposal_list_filters(api: Api) -> None:
    _maker, cdmo, site, project = _setup(api)
    p = api.propose(project["id"], site["id"])
    assert [x["id"] for x in ok(cdmo.get("/v1/proposals?status=proposed"))["items"]] == [p["id"]]
    assert ok(cdmo.get("/v1/proposals?status=accepted"))["items"] == []
    assert [
        x["id"]
        for x in ok(
            api.operator.get(f"/v1/proposals?project_id={project['id']}&site_id={site['id']}")
        )["items"]
    ] == [p["id"]]
