"""The operator's commands against a live demo server (Typer's CliRunner, in this process):
``cdmo runs submit/list/show/cancel`` and their one-line failures.

The server's market also holds a generated busy one, so a run uses its time limit and can be
cancelled while ``--wait`` follows it. Not a terminal here: progress comes as plain lines on
stderr, the result alone on stdout.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from dashboard_kit import busy_demo_server, headers, wait_final, wait_for
from ops_testkit import LiveServer, free_port
from typer.testing import CliRunner

from service.cli import app


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with busy_demo_server(tmp_path_factory.mktemp("cli-server")) as live:
        yield live


def cdmo(server: LiveServer, *args: str, key: str | None = None) -> Any:
    env = {"CDMO_API_KEY": key if key is not None else server.key("operator")}
    return CliRunner().invoke(app, [*args, "--base-url", server.url], env=env)


def test_submit_wait_follows_the_run_and_prints_the_final_json(server: LiveServer) -> None:
    result = cdmo(server, "runs", "submit", "--time-limit", "3", "--dry-run", "--wait", "--json")
    assert result.exit_code == 0, result.stderr
    final = json.loads(result.stdout)
    assert final["status"] == "succeeded" and final["dry_run"] is True
    assert final["summary"]["placed"] > 0
    # Plain progress lines (not a terminal): the phases, then objective, bound and gap.
    lines = result.stderr.splitlines()
    assert lines[0] == f"run {final['id']} queued"
    progress = [line for line in lines if " of 3 s " in line]
    assert any("objective" in line for line in progress), result.stderr
    assert any("bound" in line and "gap" in line for line in progress), result.stderr
    assert 'status {"status": "succeeded"}' in lines


def test_list_and_show_as_tables_and_json(server: LiveServer) -> None:
    run = json.loads(cdmo(server, "runs", "submit", "--time-limit", "2", "--json").stdout)
    assert run["status"] == "queued"
    wait_final(server, run["id"])
    table = cdmo(server, "runs", "list")
    assert table.exit_code == 0 and run["id"] in table.stdout and "Match runs" in table.stdout
    listed = json.loads(cdmo(server, "runs", "list", "--json", "--limit", "50").stdout)
    assert run["id"] in [r["id"] for r in listed]
    done = json.loads(cdmo(server, "runs", "list", "--json", "--status", "succeeded").stdout)
    assert done and {r["status"] for r in done} == {"succeeded"}
    shown = cdmo(server, "runs", "show", run["id"])
    assert shown.exit_code == 0
    assert run["id"] in shown.stdout and "succeeded" in shown.stdout and "placed" in shown.stdout
    body = json.loads(cdmo(server, "runs", "show", run["id"], "--json").stdout)
    assert body["id"] == run["id"] and body["summary"]["placed"] > 0


def test_submit_wait_exits_1_when_the_run_does_not_succeed(server: LiveServer) -> None:
    """The run is cancelled (from another client) while --wait follows it."""

    def cancel_when_solving() -> None:
        def running() -> str | None:
            runs = httpx.get(
                server.url + "/v1/match-runs?status=running", headers=headers(server)
            ).json()["items"]
            return next((r["id"] for r in runs if r.get("progress", {}) or {}), None)

        run_id = wait_for(running, 180, "a running run")
        httpx.post(f"{server.url}/v1/match-runs/{run_id}/cancel", headers=headers(server))

    canceller = threading.Thread(target=cancel_when_solving, daemon=True)
    canceller.start()
    result = cdmo(server, "runs", "submit", "--time-limit", "120", "--dry-run", "--wait", "--json")
    canceller.join(timeout=60)
    assert result.exit_code == 1, result.stderr
    assert json.loads(result.stdout)["status"] == "cancelled"
    assert result.stderr.splitlines()[-1].endswith("ended cancelled")


@pytest.mark.parametrize(
    ("args", "key", "code", "says"),
    [
        (("runs", "show", "run_doesnotexist"), None, 2, "not found"),
        (("runs", "show", "not an id!"), None, 2, "run not an id!"),
        (("runs", "list"), "ck_wrong", 2, "refused"),
        (("runs", "list"), "", 2, "no API key"),
        (("runs", "submit", "--time-limit", "-1"), None, 2, "time_limit_s"),
        (("runs", "submit", "--market", "MARS"), None, 2, "markets"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    server: LiveServer, args: tuple[str, ...], key: str | None, code: int, says: str
) -> None:
    result = cdmo(server, *args, key=key)
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and says in result.stderr, result.stderr


def test_a_maker_key_sees_no_runs(server: LiveServer) -> None:
    result = cdmo(server, "runs", "list", key=server.key("maker"))
    assert result.exit_code == 2 and "not found" in result.stderr


def test_server_down_is_one_line_and_exit_1(server: LiveServer) -> None:
    result = CliRunner().invoke(
        app,
        ["runs", "list", "--base-url", f"http://127.0.0.1:{free_port()}"],
        env={"CDMO_API_KEY": server.key("operator")},
    )
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "cannot reach" in result.stderr
