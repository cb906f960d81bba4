"""``cdmo``: the operator's command line (Typer).

Service commands live here; the matcher mounts its own (``gap``, ``generate``, ``solve``)
through :func:`matcher.cli.register`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError

from matcher.cli import register as register_matcher_commands
from service.config import Settings, get_settings

if TYPE_CHECKING:
    from service.db import Database

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


runs_app = typer.Typer(help="Match runs: housekeeping.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")


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
