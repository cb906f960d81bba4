"""schemas/market_snapshot.schema.json is the exported JSON Schema of MarketSnapshot."""

from __future__ import annotations

import json

from schemas.export import SNAPSHOT_SCHEMA_PATH, main, render


def test_committed_snapshot_schema_is_current() -> None:
    assert SNAPSHOT_SCHEMA_PATH.exists(), "run: python -m schemas.export"
    assert SNAPSHOT_SCHEMA_PATH.read_text() == render(), (
        "schemas/market_snapshot.schema.json is stale: run python -m schemas.export"
    )
    assert main(["--check"]) == 0


def test_snapshot_schema_describes_the_contract() -> None:
    schema = json.loads(SNAPSHOT_SCHEMA_PATH.read_text())
    assert schema["$schema"].endswith("2020-12/schema")
    assert schema["title"] == "MarketSnapshot"
    assert set(schema["required"]) >= {"version", "as_of", "sites", "listings", "projects"}
    assert schema["additionalProperties"] is False
    assert {"Site", "CapacityListing", "Project", "Proposal"} <= set(schema["$defs"])
