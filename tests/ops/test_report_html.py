"""The report's HTML (no browser): self-contained, and data cannot break out of its block."""

from __future__ import annotations

import json
import re

from service.dashboard import render_report

HOSTILE = "x</script><script>alert(1)</script><!--<img src=https://evil.example/>"


def _data_block(page: str) -> str:
    start = page.index('<script type="application/json" id="report-data">')
    body = page[start:].split(">", 1)[1]
    return body[: body.index("</script>")]


def test_hostile_strings_stay_inside_the_data_block() -> None:
    data = {
        "run": {"id": "run_x", "error": HOSTILE},
        "events": [],
        "bottlenecks": {"by_category": [{"key": HOSTILE, "projects": 1, "hours": 2.0}]},
    }
    page = render_report(data)
    assert json.loads(_data_block(page)) == data
    assert "alert(1)" not in page.replace(_data_block(page), "")
    # Every script is inline; nothing is loaded from anywhere.
    assert not re.search(r"<script[^>]+src=", page)
    assert "<link" not in page
    assert "plotly.js v" in page  # Plotly's own bundle, inlined
    assert "<title>Run run_x - CDMO marketplace report</title>" in page
