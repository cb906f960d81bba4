"""Property test: no request body, however mangled, gets a 5xx from any write endpoint."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service_testkit import Api, listing_body, ok, project_body, site_body

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def mangled(valid: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A valid body with some fields replaced, removed or added; or any JSON at all."""
    keys = st.sampled_from(sorted(valid)) | st.text(max_size=8)
    edits = st.dictionaries(keys, JSON | st.just(None), min_size=1, max_size=3)
    return st.one_of(
        edits.map(lambda e: {**valid, **e}),
        st.lists(st.sampled_from(sorted(valid)), max_size=3).map(
            lambda drop: {k: v for k, v in valid.items() if k not in drop}
        ),
        JSON,
    )


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_body_causes_a_server_error(api: Api, data: st.DataObject) -> None:
    if not hasattr(api, "fuzz_world"):
        maker, cdmo = api.maker(), api.cdmo()
        site = api.site(cdmo)
        project = api.project(maker)
        listing = api.listing(cdmo, site["id"])
        proposal = ok(
            api.operator.post(
                "/v1/proposals",
                json={"project_id": api.project(maker)["id"], "site_id": site["id"]},
            ),
            201,
        )
        api.fuzz_world = [  # type: ignore[attr-defined]
            (maker, "POST", "/v1/projects", project_body()),
            (maker, "PATCH", f"/v1/projects/{project['id']}", project_body()),
            (cdmo, "POST", "/v1/sites", site_body()),
            (cdmo, "PATCH", f"/v1/sites/{site['id']}", site_body()),
            (cdmo, "POST", f"/v1/sites/{site['id']}/listings", listing_body(month="2030-01")),
            (
                cdmo,
                "PUT",
                f"/v1/listings/{listing['id']}",
                {"capacity_hours": 5, "price_per_hour": 1},
            ),
            (cdmo, "PATCH", f"/v1/listings/{listing['id']}", {"capacity_hours": 5}),
            (
                api.operator,
                "POST",
                "/v1/proposals",
                {"project_id": project["id"], "site_id": site["id"]},
            ),
            (cdmo, "PATCH", f"/v1/proposals/{proposal['id']}", {"status": "declined"}),
            (api.operator, "POST", "/v1/orgs", {"name": "Fuzz Org", "kind": "maker"}),
            (api.operator, "POST", f"/v1/orgs/{maker.id}/keys", {"label": "fuzz"}),
        ]
    who, method, path, valid = data.draw(st.sampled_from(api.fuzz_world))  # type: ignore[attr-defined]
    body = data.draw(mangled(valid))
    raw = json.dumps(body, allow_nan=True).encode()
    version = data.draw(st.sampled_from(['"1"', '"2"', "*", "garbage", ""]))
    response = who.request(
        method, path, content=raw, headers={"Content-Type": "application/json", "If-Match": version}
    )
    assert response.status_code < 500, (method, path, raw[:300], response.text)
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json")
