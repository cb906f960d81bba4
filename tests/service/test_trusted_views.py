"""Project answers built from rows without validating them again (service.trusted) are the
bytes the view models give after validation.

The reference is what the answers were before: each project read as an ORM object and
validated by ``ProjectPublic``/``ProjectRedacted``, the page by ``Page[ProjectView]``, then
``model_dump_json``. Compared on both backends, on the lean path (PostgreSQL) and the usual
one (SQLite), for every caller kind, and on rows a database could hand back in other forms
(datetimes in another zone or naive, JSON objects with their keys in another order).
"""

from __future__ import annotations

import datetime as dt
from collections import namedtuple
from typing import Any

import pytest
from pydantic import BaseModel
from service_testkit import Api, Tenant, ok, project_body

from schemas.api import OrgKind, Page, ProjectPublic, ProjectRedacted, ProjectView
from service.auth import Principal
from service.models import Project
from service.routes.projects import page_answer, project_answer
from service.trusted import RowView


def reference_view(project: Any, viewer: Tenant) -> ProjectPublic | ProjectRedacted:
    """The view as it was built before service.trusted: validated from the ORM object."""
    if viewer.kind == "operator" or project.maker_id == viewer.id:
        return ProjectPublic.model_validate(project, from_attributes=True)
    fields = {
        name: getattr(project, name)
        for name in ProjectRedacted.model_fields
        if name not in ("view", "maker_id", "title")
    }
    hide = project.confidential
    return ProjectRedacted.model_validate(
        {
            **fields,
            "maker_id": None if hide else project.maker_id,
            "title": None if hide else project.title,
        }
    )


def _dump(model: BaseModel) -> bytes:
    return model.model_dump_json(by_alias=True).encode()


@pytest.fixture
def market(api: Api) -> tuple[list[Tenant], list[str]]:
    """A maker's projects in many forms, two proposed to a CDMO's site (one confidential);
    the callers that see some of them."""
    maker, cdmo, other = api.maker(), api.cdmo(), api.cdmo()
    site = api.site(cdmo)
    bodies: list[dict[str, Any]] = [
        {},
        {"confidential": False, "budget_ceiling": None, "title": 'Cathéter – 导管 "pilot"'},
        {
            "status": "draft",
            "required_certifications": [],
            "excluded_cdmo_ids": [other.id, cdmo.id],
            "second_source_required": True,
            "second_source_share": 0.45,
            "second_source_separation": "cdmo",
            "loads": [
                {"process": "catheter_assembly", "monthly_hours": [0.1, 1e-7, 999999.5]},
                {"process": "eo_sterilisation", "monthly_hours": [0, 12.25, 1e6]},
            ],
        },
        {"window_end": "2027-01", "loads": [{"process": "final_test", "monthly_hours": [3]}]},
        {"confidential": False, "priority": 1, "stage": "commercial"},
    ]
    ids = [api.project(maker, **body)["id"] for body in bodies]
    api.propose(ids[0], site["id"])
    api.propose(ids[1], site["id"])
    return [maker, cdmo, api.operator, api.maker()], ids


@pytest.mark.parametrize("limit", [2, 50])
def test_pages_are_the_validated_pages(
    api: Api, market: tuple[list[Tenant], list[str]], limit: int
) -> None:
    callers, _ = market
    seen = 0
    for caller in callers:
        cursor: str | None = None
        pages = 0
        while True:
            query = f"?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
            for _ in range(2):  # the first request may take the usual path (key not cached)
                response = caller.get(f"/v1/projects{query}")
                body = ok(response)
                with api.backend.db.session() as session:
                    projects = [session.get(Project, item["id"]) for item in body["items"]]
                    expected = Page[ProjectView](
                        items=[reference_view(p, caller) for p in projects],
                        next_cursor=body["next_cursor"],
                    )
                assert response.content == _dump(expected)
            seen += len(body["items"])
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert pages >= 1
    assert seen == 5 + 2 + 5  # the maker's, the CDMO's two proposed, the operator's


def test_reads_are_the_validated_views(api: Api, market: tuple[list[Tenant], list[str]]) -> None:
    callers, ids = market
    maker, cdmo, operator, _ = callers
    for caller, visible in ((maker, ids), (operator, ids), (cdmo, ids[:2])):
        for project_id in visible:
            for _ in range(2):  # the usual path, then (PostgreSQL) the lean one
                response = caller.get(f"/v1/projects/{project_id}")
                ok(response)
                with api.backend.db.session() as session:
                    project = session.get(Project, project_id)
                    expected = reference_view(project, caller)
                assert response.content == _dump(expected)
    # the CDMO's two views: one confidential (no title, no maker), one not
    titles = [ok(cdmo.get(f"/v1/projects/{i}"))["title"] for i in ids[:2]]
    assert titles[0] is None and titles[1] is not None


ROW = namedtuple("ROW", list(Project.__table__.columns.keys()))  # type: ignore[misc]


def _row(**changes: Any) -> Any:
    values: dict[str, Any] = {
        "id": "prj_1",
        "maker_id": "org_maker",
        **project_body(
            window_end="2027-02",
            # keys in the order JSONB keeps them in for this example: not the model's order
            loads=[{"monthly_hours": [1.5, 2.0], "process": "catheter_assembly"}],
            priority=5,
            budget_ceiling=None,
        ),
        "excluded_cdmo_ids": [],
        "second_source_required": False,
        "second_source_share": 0.3,
        "second_source_separation": "region",
        "confidential": True,
        "status": "proposed",
        "version": 3,
        "created_at": dt.datetime(
            2026, 12, 6, 19, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=8))
        ),
        "updated_at": dt.datetime(2026, 12, 6, 11, 30),  # naive, as SQLite hands it back
    }
    values.update(changes)
    return ROW(**values)


@pytest.mark.parametrize(
    "kind, org_id",
    [(OrgKind.MAKER, "org_maker"), (OrgKind.CDMO, "org_cdmo"), (OrgKind.OPERATOR, "org_op")],
)
@pytest.mark.parametrize("confidential", [True, False])
def test_rows_in_other_forms(kind: OrgKind, org_id: str, confidential: bool) -> None:
    """Datetimes in another zone or naive, and nested objects with their keys in another
    order, serialise as the validated models do."""
    principal = Principal(org_id, kind, "key_1")
    viewer = Tenant(org_id, kind.value, "", "", None)  # type: ignore[arg-type]
    rows = [_row(confidential=confidential), _row(id="prj_2", budget_ceiling=1e12)]
    expected_page = Page[ProjectView](
        items=[reference_view(r, viewer) for r in rows], next_cursor="abc"
    )
    assert page_answer(rows, "abc", principal).content.encode() == _dump(expected_page)
    answer = project_answer(rows[0], principal)
    assert answer.content.encode() == _dump(reference_view(rows[0], viewer))
    assert answer.headers == {"ETag": '"3"'}
    body = expected_page.model_dump(mode="json")["items"][0]
    assert body["updated_at"] == "2026-12-06T11:30:00Z"
    assert body["loads"][0] == {"process": "catheter_assembly", "monthly_hours": [1.5, 2.0]}
    if kind == OrgKind.MAKER or kind == OrgKind.OPERATOR:
        assert body["created_at"] == "2026-12-06T11:00:00.123456Z"


class _Shape(BaseModel):
    view: str = "x"
    id: str
    when: dt.datetime


def test_row_view_refuses_what_it_cannot_build() -> None:
    with pytest.raises(TypeError, match="_Shape.when: no column and no default"):
        RowView(_Shape, ["id"])
    with pytest.raises(TypeError, match="no column to convert"):
        RowView(_Shape, ["id", "when"], {"whence": str})
    shape = RowView(_Shape, ["id", "when", "other"], {"when": str, "other": int})
    assert list(shape(namedtuple("R", "id when other")("a", 1, 2))) == ["view", "id", "when"]
    assert shape(namedtuple("R", "id when other")("a", 1, 2)) == {
        "view": "x",
        "id": "a",
        "when": "1",
    }
