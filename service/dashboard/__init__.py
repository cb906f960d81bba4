"""The operator dashboard's page and assets, and the same views as one self-contained HTML
report (:func:`render_report`).

* ``static/dashboard.html``: a shell with no data; its script asks for the operator's key and
  calls the JSON API with it (see the README, "Operator dashboard", for why this scheme).
* ``static/dashboard.js``: every view, drawn by Plotly; the report runs the same script on
  data embedded in the file.
* Plotly's own ``plotly.min.js`` comes from the ``plotly`` package (its bundled copy),
  served by the service or inlined in the report: no CDN, no build step.

Reads files only: no database, no matcher.
"""

from __future__ import annotations

import html
import importlib.util
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

STATIC = Path(__file__).parent / "static"
ASSETS = {  # served name -> media type
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "plotly.min.js": "text/javascript; charset=utf-8",
}
# The shell's policy: scripts and connections to this origin only (a stolen-key XSS would
# need an inline or foreign script, both refused); Plotly injects styles and draws heatmaps
# through data: images.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _plotly_dir() -> Path:
    """The installed plotly package's folder, found without importing it (its import is slow
    and pulls in pandas-like dependencies the service does not need)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the plotly package is not installed (pip install plotly)")
    return Path(next(iter(spec.submodule_search_locations)))


@lru_cache(maxsize=8)
def asset(name: str) -> bytes:
    if name not in ASSETS:
        raise KeyError(name)
    if name == "plotly.min.js":
        return (_plotly_dir() / "package_data" / "plotly.min.js").read_bytes()
    return (STATIC / name).read_bytes()


@lru_cache(maxsize=1)
def page() -> bytes:
    return (STATIC / "dashboard.html").read_bytes()


def _script(source: bytes) -> str:
    # Inside <script>, only "</script" (any case) can end the element early; "<\/" means the
    # same to JavaScript in strings, regular expressions and comments.
    text = source.decode("utf-8")
    return text.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT")


def render_report(data: dict[str, Any]) -> str:
    """One HTML file with the run's views: Plotly, the dashboard script, its style sheet and
    the data inlined; opens from disk with no network.

    ``data``: ``run`` (RunPublic JSON), ``events`` (the progress events, in order),
    ``utilisation`` (all rows), ``bottlenecks``, ``placements`` (per CDMO), and
    ``analytics_error`` (a sentence) when the run has no answer to show.
    """
    run_id = str(data["run"]["id"])
    # "<" only occurs inside JSON strings: as \u003c no "</script" or "<!--" can end or
    # confuse the data block.
    payload = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>Run {html.escape(run_id)} - CDMO marketplace report</title>\n"
        f"<style>\n{asset('dashboard.css').decode('utf-8')}\n</style>\n"
        f"<script>\n{_script(asset('plotly.min.js'))}\n</script>\n"
        '</head>\n<body data-mode="report">\n'
        "<header><h1>Match run report</h1>"
        f'<span class="muted">{html.escape(str(data.get("generated_at", "")))}</span></header>\n'
        '<main id="app"><section id="run-view"></section></main>\n'
        f'<script type="application/json" id="report-data">{payload}</script>\n'
        f"<script>\n{_script(asset('dashboard.js'))}\n</script>\n"
        "</body>\n</html>\n"
    )
