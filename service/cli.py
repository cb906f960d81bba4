"""``cdmo``: the operator's command line (Typer).

Service commands live here; the matcher mounts its own (``gap``, ``generate``, ``solve``)
through :func:`matcher.cli.register`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError

from matcher.cli import register as register_matcher_commands
from service.config import Settings, get_settings

if TYPE_CHECKING:
    from rich.table import Table

    from service.db import Database
    from service.opsclient import OpsClient

app = typer.Typer(
    help="CDMO capacity marketplace: run the API, migrate, seed; matcher tools.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database migrations (Alembic).", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _settings() -> Settings:
    """The settings, or a clean exit (no traceback) when the environment is unsafe or wrong.

    Also sets up logging (CDMO_LOG_LEVEL, CDMO_LOG_FORMAT) for the command that asked.
    """
    from service.observability import configure_logging

    try:
        settings = get_settings()
    except ValidationError as exc:
        for error in exc.errors(include_input=False, include_url=False):  # no secrets echoed
            where = ".".join(str(p) for p in error["loc"]) or "settings"
            typer.echo(f"configuration error: {where}: {error['msg']}", err=True)
        raise typer.Exit(2) from exc
    configure_logging(settings.log_level, settings.log_format)
    return settings


@contextmanager
def _database() -> Iterator[Database]:
    """The configured database, disposed of when the block ends."""
    from service.db import Database

    settings = _settings()
    db = Database(settings.effective_database_url, settings.db)
    try:
        yield db
    finally:
        db.dispose()


def _echo_revision(db: Database) -> None:
    from sqlalchemy.engine import make_url

    from service.db import current_revision

    safe_url = make_url(db.url).render_as_string(hide_password=True)
    typer.echo(f"{safe_url}: at revision {current_revision(db.engine)}")


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    from service.db import upgrade

    with _database() as db:
        upgrade(db.engine, revision)
        _echo_revision(db)


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(help="e.g. base, or -1.")]) -> None:
    """Revert migrations down to REVISION."""
    from service.db import downgrade

    with _database() as db:
        downgrade(db.engine, revision)
        _echo_revision(db)


@db_app.command("current")
def db_current() -> None:
    """Print the database's current revision."""
    with _database() as db:
        _echo_revision(db)


@app.command()
def seed(
    new_key: Annotated[
        bool, typer.Option("--new-key", help="Issue another key even if one is active.")
    ] = False,
) -> None:
    """Migrate, create the operator organisation if missing, and print a first operator key.

    Keys are stored hashed, so an existing key cannot be shown again: with an active key
    already there this prints nothing secret unless --new-key is given.
    """
    from service.db import upgrade
    from service.seed import seed_operator

    settings = _settings()
    with _database() as db:
        upgrade(db.engine)
        result = seed_operator(
            db, secret=settings.auth.hmac_secret.get_secret_value(), new_key=new_key
        )
    if result.created_org:
        typer.echo(f"created operator organisation {result.org_id}")
    if result.key is None:
        typer.echo(
            f"operator {result.org_id} already has an active key; use --new-key to issue another"
        )
        return
    typer.echo(f"operator API key (shown once, id {result.key_id}):\n{result.key}")


@app.command()
def serve(
    demo: Annotated[
        bool, typer.Option("--demo", help="Load the demo marketplace and print its API keys.")
    ] = False,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (needs REDIS_URL).")] = 1,
    migrate: Annotated[bool, typer.Option(help="Apply migrations before serving.")] = True,
) -> None:
    """Run the HTTP API (docs at /docs), migrating the database first."""
    import uvicorn

    from service.db import upgrade

    settings = _settings()
    if demo and settings.env == "production":
        raise typer.BadParameter("--demo is refused when CDMO_ENV=production", param_hint="--demo")
    if workers > 1 and not settings.redis_url:
        raise typer.BadParameter(
            "several workers need REDIS_URL (idempotency and rate limits must be shared)",
            param_hint="--workers",
        )
    with _database() as db:
        if migrate:
            upgrade(db.engine)
        if demo:
            from service.demo import load_demo

            keys = load_demo(db, secret=settings.auth.hmac_secret.get_secret_value())
            typer.echo("\nDemo marketplace loaded. API keys (send as Authorization: Bearer <key>):")
            for who, key in keys.items():
                typer.echo(f"  {who:48} {key}")
            typer.echo(f"\nDocs: http://{host}:{port}/docs\n")
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
    )


@app.command()
def worker(
    threads: Annotated[
        int, typer.Option(min=1, max=64, help="Runs this process solves at once.")
    ] = 1,
) -> None:
    """Consume match runs from Redis (needs REDIS_URL and DATABASE_URL); stop with SIGTERM."""
    from service.worker import serve as serve_worker

    settings = _settings()  # also sets up (JSON) logging
    if not settings.redis_url:
        typer.echo("cdmo worker needs REDIS_URL (without it, the API runs jobs itself)", err=True)
        raise typer.Exit(2)
    serve_worker(settings, threads=threads)


@app.command()
def scheduler() -> None:
    """Send the periodic jobs (proposal expiry, webhook retries) to the workers through Redis;
    run exactly one (needs REDIS_URL); stop with SIGTERM."""
    from service.housekeeping import serve_scheduler
    from service.jobs.engine import dramatiq_engine

    settings = _settings()
    if not settings.redis_url:
        typer.echo(
            "cdmo scheduler needs REDIS_URL (without it, the API runs the periodic jobs itself)",
            err=True,
        )
        raise typer.Exit(2)
    serve_scheduler(settings, dramatiq_engine(settings))


runs_app = typer.Typer(
    help="Match runs on a server (submit, list, show, cancel) and housekeeping (prune).",
    no_args_is_help=True,
)
app.add_typer(runs_app, name="runs")

# --- operator commands against a server (HTTP, service.opsclient) ----------------------------

BaseUrl = Annotated[
    str,
    typer.Option(
        "--base-url", envvar="CDMO_BASE_URL", help="The API's address.", show_default=True
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--key",
        envvar="CDMO_API_KEY",
        help="An operator's API key (or CDMO_API_KEY).",
        show_default=False,
    ),
]
JsonOut = Annotated[bool, typer.Option("--json", help="JSON on stdout, for scripts.")]
DEFAULT_BASE_URL = "http://127.0.0.1:8000"


@contextmanager
def _ops(base_url: str, key: str | None) -> Iterator[OpsClient]:
    """The client; any :class:`OpsError` becomes one line on stderr and its exit status."""
    from service.opsclient import OpsClient, OpsError

    try:
        with OpsClient(base_url, key) as client:
            yield client
    except OpsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.code) from None


def _fmt(value: object, spec: str = ",.0f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float | int) and not isinstance(value, bool):
        return format(value, spec)
    return str(value)


def _figure(run: dict[str, Any], name: str) -> object:
    summary = run.get("summary") or {}
    progress = run.get("progress") or {}
    return summary.get(name, progress.get(name))


def _placed(run: dict[str, Any]) -> str:
    summary = run.get("summary") or {}
    if summary.get("placed") is not None:
        return f"{summary['placed']}/{summary['projects']}"
    return _fmt((run.get("progress") or {}).get("placed"), ",")


def _runs_table(runs: list[dict[str, Any]]) -> Table:
    from rich.table import Table

    table = Table(title="Match runs (newest first)")
    table.add_column("run", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for column in ("created", "limit", "objective", "bound", "gap", "placed"):
        table.add_column(column, justify="right")
    for run in runs:
        table.add_row(
            run["id"],
            run["status"] + (" (dry)" if run.get("dry_run") else ""),
            str(run.get("created_at", ""))[:19].replace("T", " "),
            f"{run['params']['time_limit_s']:g} s",
            _fmt(_figure(run, "objective")),
            _fmt(_figure(run, "bound")),
            _fmt(_figure(run, "gap"), ".2%"),
            _placed(run),
        )
    return table


def _run_table(run: dict[str, Any]) -> Table:
    from rich.table import Table

    table = Table(title=f"Run {run['id']}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    summary = run.get("summary") or {}
    rows: list[tuple[str, object]] = [
        ("status", run["status"]),
        ("dry run", "yes" if run.get("dry_run") else "no"),
        ("scope", json.dumps(run.get("scope"), separators=(",", ":"))),
        ("time limit", f"{run['params']['time_limit_s']:g} s (seed {run['params'].get('seed')})"),
        ("created", run.get("created_at")),
        ("finished", run.get("finished_at")),
        ("objective", _fmt(_figure(run, "objective"))),
        ("bound", _fmt(_figure(run, "bound"))),
        ("gap", _fmt(_figure(run, "gap"), ".2%")),
        ("placed", _placed(run)),
        ("unplaced by reason", json.dumps(summary.get("unplaced_by_reason") or {})),
        ("partial", summary.get("partial")),
        ("commit", json.dumps(summary.get("commit"), separators=(",", ":"))),
        ("error", run.get("error")),
    ]
    for name, value in rows:
        if value is not None:
            table.add_row(name, str(value))
    return table


def _print(renderable: object) -> None:
    from rich.console import Console

    Console().print(renderable)


def _watch(client: OpsClient, run: dict[str, Any], *, progress: bool | None) -> dict[str, Any]:
    """Follow the run's events to its end: a live Rich display on a terminal (stderr), plain
    lines otherwise; returns the final run."""
    from rich.console import Console

    from matcher.cli_progress import SolveProgress
    from matcher.control import Progress as SolveReport

    console = Console(stderr=True)
    if progress is not None:
        console = Console(stderr=True, force_terminal=progress)
    final: dict[str, Any] = run
    with SolveProgress(float(run["params"]["time_limit_s"]), console) as display:
        for event in client.events(run["id"]):
            data = event.data
            if event.kind == "progress":
                display.on_progress(
                    SolveReport(
                        phase=str(data.get("phase", "")),
                        elapsed_s=float(data.get("elapsed_s") or 0.0),
                        objective=data.get("objective"),
                        bound=data.get("bound"),
                        placed=data.get("placed"),
                    )
                )
            elif event.kind == "status" and not console.is_terminal:
                console.print(f"status {json.dumps(data)}", markup=False, highlight=False)
            elif event.kind == "final":
                final = data
    return final


@runs_app.command("submit")
def runs_submit(
    category: Annotated[
        list[str] | None, typer.Option("--category", help="Scope: a device category (repeat).")
    ] = None,
    market: Annotated[
        list[str] | None, typer.Option("--market", help="Scope: a target market (repeat).")
    ] = None,
    project: Annotated[
        list[str] | None, typer.Option("--project", help="Scope: a project id (repeat).")
    ] = None,
    time_limit: Annotated[float, typer.Option("--time-limit", help="Seconds.")] = 30.0,
    seed: Annotated[int, typer.Option(help="Solver seed.")] = 0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Solve, commit nothing.")] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the run to its end; exit 1 unless it succeeds.")
    ] = False,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="Live display while waiting (default: when stderr is a terminal).",
        ),
    ] = None,
    json_out: JsonOut = False,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    key: ApiKey = None,
) -> None:
    """Start a match run on the server (all open projects unless scoped)."""
    import uuid

    body = {
        "scope": {
            "categories": category or [],
            "markets": market or [],
            "project_ids": project or [],
        },
        "params": {"time_limit_s": time_limit, "seed": seed},
        "dry_run": dry_run,
    }
    with _ops(base_url, key) as client:
        run = client.submit(body, idempotency_key=f"cli-{uuid.uuid4().hex}")
        if not wait:
            if json_out:
                typer.echo(json.dumps(run))
            else:
                typer.echo(f"{run['id']} {run['status']}")
            return
        typer.echo(f"run {run['id']} {run['status']}", err=True)
        final = _watch(client, run, progress=progress)
    if json_out:
        typer.echo(json.dumps(final))
    else:
        _print(_run_table(final))
    if final.get("status") != "succeeded":
        typer.echo(f"error: run {final.get('id')} ended {final.get('status')}", err=True)
        raise typer.Exit(1)


@runs_app.command("list")
def runs_list(
    status: Annotated[str | None, typer.Option(help="Only runs in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="How many.")] = 20,
    json_out: JsonOut = False,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    key: ApiKey = None,
) -> None:
    """The newest runs, as a table (or JSON)."""
    with _ops(base_url, key) as client:
        runs = client.list_runs(status=status, limit=limit)
    if json_out:
        typer.echo(json.dumps(runs))
    else:
        _print(_runs_table(runs))


@runs_app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="The run's id.")],
    json_out: JsonOut = False,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    key: ApiKey = None,
) -> None:
    """One run: status, figures, summary."""
    with _ops(base_url, key) as client:
        run = client.get_run(run_id)
    if json_out:
        typer.echo(json.dumps(run))
    else:
        _print(_run_table(run))


@runs_app.command("cancel")
def runs_cancel(
    run_id: Annotated[str, typer.Argument(help="The run's id.")],
    base_url: BaseUrl = DEFAULT_BASE_URL,
    key: ApiKey = None,
) -> None:
    """Cancel a queued or running run (it keeps its best answer, commits nothing)."""
    with _ops(base_url, key) as client:
        run = client.cancel(run_id)
    typer.echo(f"{run['id']} {run['status']} (cancel requested)")


@app.command()
def report(
    run_id: Annotated[str, typer.Argument(help="The run's id.")],
    out: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    key: ApiKey = None,
) -> None:
    """The run's dashboard views as one self-contained HTML file (read through the API)."""
    import datetime as dt

    from service.dashboard import render_report

    with _ops(base_url, key) as client:
        data = client.report_data(run_id)
    data["generated_at"] = dt.datetime.now(dt.UTC).strftime("generated %Y-%m-%d %H:%M UTC")
    page = render_report(data)
    if out is None:
        typer.echo(page, nl=False)
    else:
        out.write_text(page, encoding="utf-8")
        typer.echo(f"wrote {out}", err=True)


@runs_app.command("prune")
def runs_prune(
    days: Annotated[
        int | None, typer.Option(min=1, help="Keep snapshots of runs newer than this.")
    ] = None,
) -> None:
    """Drop the stored snapshots of runs finished more than DAYS ago (no replay after)."""
    import datetime as dt

    from service import repositories as repo
    from service.models import utcnow

    settings = _settings()
    keep = days or settings.runs.snapshot_keep_days
    with _database() as db, db.session() as session:
        n = repo.runs.prune_snapshots(
            session=session, older_than=utcnow() - dt.timedelta(days=keep)
        )
        session.commit()
    typer.echo(f"pruned the snapshots of {n} runs finished more than {keep} days ago")


@app.command()
def check() -> None:
    """Verify the database's invariants (capacity, idempotency, proposals); exit 1 on any
    violation."""
    from sqlalchemy.exc import SQLAlchemyError

    from service.checks import run_checks

    try:
        with _database() as db:
            outcomes = run_checks(db)
    except SQLAlchemyError as exc:
        typer.echo(f"cannot read the database: {type(exc).__name__}", err=True)
        raise typer.Exit(2) from exc
    for outcome in outcomes:
        mark = "ok  " if outcome.ok else "FAIL"
        typer.echo(f"{mark} {outcome.check.name}: {outcome.check.description}")
        for line in outcome.violations[:50]:
            typer.echo(f"       {line}")
        if len(outcome.violations) > 50:
            typer.echo(f"       ... and {len(outcome.violations) - 50} more")
    if not all(o.ok for o in outcomes):
        raise typer.Exit(1)


@app.command()
def openapi(
    out: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
) -> None:
    """Print (or write) the OpenAPI 3.1 document."""
    from service.app import create_app

    text = json.dumps(create_app().openapi(), indent=2, sort_keys=False) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)
        typer.echo(f"wrote {out}")


register_matcher_commands(app)
