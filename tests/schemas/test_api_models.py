"""The API wire models: their documented examples are valid, and they enforce the rules."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

import schemas.api as api
from schemas.api import (
    ListingValues,
    Page,
    ProjectCreate,
    ProjectPublic,
    ProjectRedacted,
    ProjectView,
    SiteCreate,
)
from schemas.market import Project

BASES = {"ApiModel", "Page", "ProjectFields", "SiteBase", "FieldError"}  # no examples of their own
MODELS = [
    getattr(api, name)
    for name in api.__all__
    if name not in BASES
    and isinstance(getattr(api, name), type)
    and issubclass(getattr(api, name), BaseModel)
]


def _examples(model: type[BaseModel]) -> list[Any]:
    extra = model.model_config.get("json_schema_extra")
    return list(extra.get("examples", [])) if isinstance(extra, dict) else []


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_example_validates(model: type[BaseModel]) -> None:
    examples = _examples(model)
    assert examples, f"{model.__name__} has no example"
    for example in examples:
        model.model_validate(example)


def test_page_examples_are_built_from_the_item_example() -> None:
    schema = Page[ProjectPublic].model_json_schema()
    example = schema["examples"][0]
    Page[ProjectPublic].model_validate(example)
    assert example["items"][0]["id"].startswith("prj_")


def test_project_examples_are_valid_matcher_projects() -> None:
    public = ProjectPublic.model_validate(_examples(ProjectPublic)[0])
    data = {name: getattr(public, name) for name in Project.model_fields}
    assert Project.model_validate(data).window_months == 3


def test_project_view_is_discriminated() -> None:
    adapter = TypeAdapter(ProjectView)
    assert isinstance(adapter.validate_python(_examples(ProjectRedacted)[0]), ProjectRedacted)
    assert isinstance(adapter.validate_python(_examples(ProjectPublic)[0]), ProjectPublic)


@pytest.mark.parametrize(
    "change,fragment",
    [
        ({"window_end": "2026-12"}, "window_end is before window_start"),
        ({"loads": [{"process": "final_test", "monthly_hours": [1.0]}]}, "the window has 3"),
        ({"target_markets": ["EU", "EU"]}, "listed twice"),
        ({"budget_ceiling": float("inf")}, "finite"),
        ({"surprise": True}, "Extra inputs"),
    ],
)
def test_project_rules(change: dict[str, Any], fragment: str) -> None:
    body = {**_examples(ProjectCreate)[0], **change}
    with pytest.raises(ValidationError, match=fragment):
        ProjectCreate.model_validate(body)


def test_listing_and_site_rules() -> None:
    with pytest.raises(ValidationError, match="reserved_hours exceeds capacity_hours"):
        ListingValues(capacity_hours=10, reserved_hours=11, price_per_hour=1)
    body = _examples(SiteCreate)[0]
    with pytest.raises(ValidationError, match="country CN and region CN go together"):
        SiteCreate.model_validate({**body, "country": "CN"})
    with pytest.raises(ValidationError, match="overseas site cannot be in region CN"):
        SiteCreate.model_validate({**body, "country": "CN", "region": "CN"})
