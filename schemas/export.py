"""Export the JSON Schema of :class:`schemas.market.MarketSnapshot` to a committed file.

    python -m schemas.export            # rewrite schemas/market_snapshot.schema.json
    python -m schemas.export --check    # exit 1 if the committed file is stale

A test runs the check, so the file cannot drift from the model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from schemas.market import MarketSnapshot

SNAPSHOT_SCHEMA_PATH = Path(__file__).with_name("market_snapshot.schema.json")


def snapshot_json_schema() -> dict[str, Any]:
    schema = MarketSnapshot.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://cdmo-market.invalid/schemas/market_snapshot.schema.json",
        **schema,
    }


def render() -> str:
    return json.dumps(snapshot_json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in args:
        current = SNAPSHOT_SCHEMA_PATH.read_text() if SNAPSHOT_SCHEMA_PATH.exists() else ""
        if current != text:
            sys.stderr.write(f"{SNAPSHOT_SCHEMA_PATH} is stale: run python -m schemas.export\n")
            return 1
        return 0
    SNAPSHOT_SCHEMA_PATH.write_text(text)
    sys.stdout.write(f"wrote {SNAPSHOT_SCHEMA_PATH}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
