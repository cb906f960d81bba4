"""The `cdmo` console script: commands, `db upgrade`, `seed`, and `serve --demo` for real."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

pytest.importorskip(
    "matcher.cli_market",
    reason="matcher/cli_market.py (matcher team) not written yet; service.cli mounts its commands",
)

from alembic.script import ScriptDirectory  # noqa: E402

from service.cli import app  # noqa: E402
from service.config import get_settings  # noqa: E402
from service.db import alembic_config  # noqa: E402
from service.demo import OPERATOR  # noqa: E402
from service.security import derived_key  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    for var in ("DATABASE_URL", "REDIS_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CDMO_DATA_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_help_lists_service_and_matcher_commands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for command in ("serve", "seed", "db", "openapi", "gap", "generate", "solve"):
        assert command in result.output


def test_db_upgrade_then_seed(env: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert f"at revision {head}" in result.output
    assert (env / "var" / "cdmo.db").exists()
    result = runner.invoke(app, ["seed"])
    assert result.exit_code == 0, result.output
    assert re.search(r"^ck_\S{40,}$", result.output, re.M)
    result = runner.invoke(app, ["seed"])
    assert "already has an active key" in result.output
    assert not re.search(r"^ck_", result.output, re.M)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_demo_starts_and_answers(env: Path) -> None:
    """What `make run` does: migrate, load the demo, print keys, serve docs and the API."""
    port = _free_port()
    cdmo = Path(sys.executable).with_name("cdmo")
    proc = subprocess.Popen(
        [str(cdmo), "serve", "--demo", "--port", str(port)],
        cwd=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "CDMO_DATA_DIR": str(env / "var")},
    )
    output = ""
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            pytest.fail("cdmo serve --demo did not answer /health within 60 s")
        assert httpx.get(f"http://127.0.0.1:{port}/docs").status_code == 200
        # the demo keys derive from the (default, development) HMAC secret
        key = derived_key(get_settings().auth.hmac_secret.get_secret_value(), OPERATOR)
        me = httpx.get(
            f"http://127.0.0.1:{port}/v1/orgs/me", headers={"Authorization": f"Bearer {key}"}
        )
        assert me.status_code == 200 and me.json()["id"] == OPERATOR
        snapshot = httpx.get(
            f"http://127.0.0.1:{port}/v1/market/snapshot",
            headers={"Authorization": f"Bearer {key}"},
        ).json()
        assert len(snapshot["projects"]) == 11 and len(snapshot["sites"]) == 9
        proc.terminate()
        output, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    printed = re.search(r"^\s+operator\s.*?(ck_\S+)$", output, re.M)
    assert printed and printed.group(1) == key, output
    assert "Docs: http://127.0.0.1" in output


def test_unsafe_production_settings_stop_the_cli_without_echoing_secrets(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CDMO_ENV", "production")
    monkeypatch.setenv("CDMO_AUTH__HMAC_SECRET", "tooshort-secret")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["serve", "--demo"])
    assert result.exit_code == 2
    assert "CDMO_AUTH__HMAC_SECRET must be set" in result.output
    assert "tooshort-secret" not in result.output


def test_check_reports_each_invariant_and_exits_1_on_a_violation(env: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    result = runner.invoke(app, ["check"])
    assert result.exit_code == 0, result.output
    for name in ("capacity", "idempotency", "proposals"):
        assert f"ok   {name}:" in result.output
    import sqlite3

    with sqlite3.connect(env / "var" / "cdmo.db") as conn:
        conn.execute(
            "INSERT INTO idempotency_records (key, fingerprint, status, headers, body,"
            " created_at, expires_at) VALUES ('k', 'f', 0, '{}', '', '2026-01-01', '2026-01-02')"
        )
    result = runner.invoke(app, ["check"])
    assert result.exit_code == 1
    assert "FAIL idempotency:" in result.output and "committed with status 0" in result.output
