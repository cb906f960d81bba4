"""``trusted_builder``: the instances ``model_construct`` gives, made without its per-call work."""

from __future__ import annotations

import pytest
from pydantic import PrivateAttr

from schemas.market import (
    Assignment,
    BlockReason,
    CapacityShortfall,
    MatchResult,
    Role,
    SolveStatus,
    StrictModel,
    Unassigned,
    trusted_builder,
)


def test_built_instances_equal_model_construct_and_round_trip() -> None:
    values = {
        "project_id": "p1", "site_id": "s1", "cdmo_id": "c1", "role": Role.SECOND_SOURCE,
        "share": 0.3, "value": 120.0, "cost": 45.5,
    }  # fmt: skip
    built = trusted_builder(Assignment)(dict(values))
    assert built == Assignment.model_construct(**values)
    assert built.model_fields_set == set(Assignment.model_fields)
    short = CapacityShortfall(site_id="s1", process="extrusion", month="2027-01", short_hours=3.0)
    gone = trusted_builder(Unassigned)(
        {"project_id": "p2", "reason": BlockReason.CAPACITY, "detail": "d", "shortfalls": [short]}
    )
    result = MatchResult(
        snapshot_version=1, status=SolveStatus.FEASIBLE, objective=1.0, bound=2.0, gap=0.5,
        assignments=[built], unassigned=[gone],
    )  # fmt: skip
    again = MatchResult.model_validate_json(result.model_dump_json())
    assert again == result and again.assignments[0] == built and again.unassigned[0] == gone
    with pytest.raises(Exception, match="frozen"):
        built.share = 1.0  # type: ignore[misc]


def test_models_with_private_state_are_refused() -> None:
    class Private(StrictModel):
        x: int
        _cache: int = PrivateAttr(default=0)

    with pytest.raises(TypeError, match="model_construct"):
        trusted_builder(Private)
