"""The dependency rules of the match-run code (see ../shared/design.md): only service/flows
imports the matcher (the CLI mounts the matcher's own commands); service/jobs is
infrastructure and imports neither flows nor routes; routes never import the run flows."""

from __future__ import annotations

import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[2] / "service"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(under: Path) -> list[Path]:
    return sorted(p for p in under.rglob("*.py"))


def test_only_flows_import_the_matcher() -> None:
    offenders = [
        str(p.relative_to(SERVICE))
        for p in _modules(SERVICE)
        if "flows" not in p.parts
        and p.name != "cli.py"
        and any(n == "matcher" or n.startswith("matcher.") for n in _imports(p))
    ]
    assert offenders == []


def test_jobs_import_neither_flows_nor_routes() -> None:
    for p in _modules(SERVICE / "jobs"):
        bad = {n for n in _imports(p) if n.startswith(("service.flows", "service.routes"))}
        assert not bad, (p.name, bad)


# The run job's flows run in workers, never in a request; synchronous flows (deals, and by
# design.md candidates and explanations) are called by their routes.
RUN_FLOWS = ("service.flows.match_run", "service.flows.commit_run", "service.flows.snapshot")


def test_routes_never_import_the_run_flows() -> None:
    for p in _modules(SERVICE / "routes"):
        assert not {n for n in _imports(p) if n.startswith(RUN_FLOWS)}, p.name


def test_the_api_does_not_import_the_worker_module() -> None:
    """The API process hands the local pool its job by path; only the pool's processes (and
    ``cdmo worker``) import :mod:`service.worker`."""
    import subprocess
    import sys

    code = "import sys, service.app; print('service.worker' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False"
