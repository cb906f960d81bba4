"""Projects: CRUD, filters, cursor pagination, status moves, ownership."""

from __future__ import annotations

from service_testkit import Api, assert_problem, ok, project_body


def test_create_returns_201_location_etag_and_the_stored_project(api: Api) -> None:
    maker = api.maker()
    response = maker.post("/v1/projects", json=project_body(title="Stent"))
    body = ok(response, 201)
    assert response.headers["location"] == f"/v1/projects/{body['id']}"
    assert response.headers["etag"] == '"1"'
    assert body["maker_id"] == maker.id
    assert body["status"] == "open" and body["version"] == 1 and body["view"] == "full"
    fetched = ok(maker.get(f"/v1/projects/{body['id']}"))
    assert fetched == body
    assert fetched["loads"] == [
        {"process": "catheter_assembly", "monthly_hours": [100.0, 120.0, 140.0]}
    ]


def test_create_as_operator_needs_a_maker_id(api: Api) -> None:
    maker = api.maker()
    body = project_body()
    assert_problem(api.operator.post("/v1/projects", json=body), 422, "validation-error")
    created = ok(api.operator.post("/v1/projects", json={**body, "maker_id": maker.id}), 201)
    assert created["maker_id"] == maker.id
    cdmo = api.cdmo()
    problem = assert_problem(
        api.operator.post("/v1/projects", json={**body, "maker_id": cdmo.id}),
        422,
        "validation-error",
    )
    assert problem["errors"][0]["field"] == "maker_id"


def test_a_maker_cannot_post_for_another_maker_and_a_cdmo_cannot_post(api: Api) -> None:
    maker, other = api.maker(), api.maker()
    assert_problem(
        maker.post("/v1/projects", json=project_body(maker_id=other.id)), 403, "forbidden"
    )
    assert_problem(api.cdmo().post("/v1/projects", json=project_body()), 403, "forbidden")
    assert ok(other.get("/v1/projects"))["items"] == []


def test_patch_changes_fields_bumps_version_and_needs_if_match(api: Api) -> None:
    maker = api.maker()
    project = api.project(maker)
    url = f"/v1/projects/{project['id']}"
    assert_problem(maker.patch(url, json={"priority": 9}), 428, "precondition-required")
    response = maker.patch(
        url, json={"priority": 9, "budget_ceiling": None}, headers={"If-Match": '"1"'}
    )
    body = ok(response)
    assert body["priority"] == 9 and body["budget_ceiling"] is None and body["version"] == 2
    assert response.headers["etag"] == '"2"'
    stale = assert_problem(
        maker.patch(url, json={"priority": 3}, headers={"If-Match": '"1"'}),
        412,
        "precondition-failed",
    )
    assert stale["current_version"] == 2
    assert ok(maker.get(url))["priority"] == 9


def test_patch_window_and_loads_are_checked_together(api: Api) -> None:
    maker = api.maker()
    project = api.project(maker)
    url = f"/v1/projects/{project['id']}"
    # shrinking the window without shortening the loads would leave them inconsistent
    problem = assert_problem(
        maker.patch(url, json={"window_end": "2027-02"}, headers={"If-Match": '"1"'}),
        422,
        "validation-error",
    )
    assert problem["errors"][0]["field"] == "loads"
    assert ok(maker.get(url))["version"] == 1
    body = ok(
        maker.patch(
            url,
            json={
                "window_end": "2027-02",
                "loads": [{"process": "catheter_assembly", "monthly_hours": [10, 20]}],
            },
            headers={"If-Match": '"1"'},
        )
    )
    assert body["window_end"] == "2027-02" and body["version"] == 2


def test_maker_status_moves(api: Api) -> None:
    maker = api.maker()
    project = api.project(maker)
    url = f"/v1/projects/{project['id']}"
    body = ok(maker.patch(url, json={"status": "draft"}, headers={"If-Match": '"1"'}))
    assert body["status"] == "draft"
    assert_problem(
        maker.patch(url, json={"status": "proposed"}, headers={"If-Match": '"2"'}),
        409,
        "invalid-state",
    )
    assert_problem(
        maker.patch(url, json={"status": "matched"}, headers={"If-Match": '"2"'}),
        409,
        "invalid-state",
    )
    body = ok(maker.patch(url, json={"status": "closed"}, headers={"If-Match": '"2"'}))
    assert body["status"] == "closed"
    assert_problem(
        maker.patch(url, json={"priority": 2}, headers={"If-Match": '"3"'}), 409, "invalid-state"
    )
    body = ok(maker.patch(url, json={"status": "open", "priority": 2}, headers={"If-Match": '"3"'}))
    assert body["status"] == "open" and body["priority"] == 2


def test_create_as_draft_and_unknown_status_is_rejected(api: Api) -> None:
    maker = api.maker()
    assert ok(maker.post("/v1/projects", json=project_body(status="draft")), 201)["status"] == (
        "draft"
    )
    assert_problem(
        maker.post("/v1/projects", json=project_body(status="matched")), 422, "validation-error"
    )


def test_delete(api: Api) -> None:
    maker = api.maker()
    project = api.project(maker)
    url = f"/v1/projects/{project['id']}"
    assert_problem(maker.delete(url, headers={"If-Match": '"7"'}), 412, "precondition-failed")
    assert maker.delete(url).status_code == 204
    assert_problem(maker.get(url), 404, "not-found")
    assert_problem(maker.delete(url), 404, "not-found")


def test_list_filters(api: Api) -> None:
    maker = api.maker()
    a = api.project(
        maker, category="ivd", device_class="II", target_markets=["US"], stage="commercial"
    )
    b = api.project(maker, target_markets=["EU", "SEA"], status="draft")
    c = api.project(maker)

    def ids(query: str) -> set[str]:
        return {p["id"] for p in ok(maker.get(f"/v1/projects?{query}"))["items"]}

    assert ids("") == {a["id"], b["id"], c["id"]}
    assert ids("category=ivd") == {a["id"]}
    assert ids("device_class=III") == {b["id"], c["id"]}
    assert ids("stage=commercial") == {a["id"]}
    assert ids("status=draft") == {b["id"]}
    assert ids("market=EU") == {b["id"], c["id"]}
    assert ids("market=US") == {a["id"]}
    assert ids("market=SEA&status=open") == set()
    assert_problem(maker.get("/v1/projects?category=toaster"), 422, "validation-error")


def test_cursor_pagination_visits_every_project_once_in_id_order(api: Api) -> None:
    maker = api.maker()
    created = [api.project(maker, title=f"P{i}")["id"] for i in range(7)]
    seen: list[str] = []
    pages = 0
    cursor = None
    while True:
        query = "limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = ok(maker.get(f"/v1/projects?{query}"))
        pages += 1
        seen.extend(p["id"] for p in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(page["items"]) == 3
    assert pages == 3
    assert seen == sorted(created)
    assert len(set(seen)) == 7


def test_bad_cursor_and_limits_are_422(api: Api) -> None:
    maker = api.maker()
    for query in ("cursor=not-a-cursor!", "cursor=eyJ4IjogMX0", "limit=0", "limit=100000"):
        problem = assert_problem(maker.get(f"/v1/projects?{query}"), 422, "validation-error")
        assert problem["errors"][0]["location"] == "query"


def test_list_as_operator_spans_makers_and_filters_by_maker(api: Api) -> None:
    m1, m2 = api.maker(), api.maker()
    p1, p2 = api.project(m1), api.project(m2)
    items = ok(api.operator.get("/v1/projects"))["items"]
    assert {p["id"] for p in items} == {p1["id"], p2["id"]}
    items = ok(api.operator.get(f"/v1/projects?maker_id={m2.id}"))["items"]
    assert [p["id"] for p in items] == [p2["id"]]


def test_excluded_cdmos_must_be_cdmos(api: Api) -> None:
    maker, cdmo = api.maker(), api.cdmo()
    ok(maker.post("/v1/projects", json=project_body(excluded_cdmo_ids=[cdmo.id])), 201)
    problem = assert_problem(
        maker.post("/v1/projects", json=project_body(excluded_cdmo_ids=[cdmo.id, maker.id])),
        422,
        "validation-error",
    )
    assert problem["errors"][0]["field"] == "excluded_cdmo_ids.1"
    directory = ok(maker.get("/v1/cdmos"))["items"]
    assert [c["id"] for c in directory] == [cdmo.id]
