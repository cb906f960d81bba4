"""Alembic environment. Uses the connection handed over in ``config.attributes`` (the service
and the tests do this), else ``DATABASE_URL`` / the embedded SQLite default."""

from __future__ import annotations

import logging.config

from alembic import context
from sqlalchemy import Connection, text
from sqlmodel import SQLModel

import service.models  # noqa: F401  (registers the tables on SQLModel.metadata)

config = context.config
target_metadata = SQLModel.metadata

# Any constant: serialises concurrent `cdmo db upgrade` runs (several replicas starting at once).
_MIGRATION_LOCK_ID = 0x0C0D0


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        transactional_ddl=True,  # SQLite too: service/db.py emits BEGIN itself
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_ID})
        context.run_migrations()


def run_migrations_offline() -> None:
    from service.config import get_settings

    context.configure(
        url=get_settings().effective_database_url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return
    if config.config_file_name is not None:
        logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)
    from service.config import get_settings
    from service.db import make_engine

    engine = make_engine(get_settings().effective_database_url)
    try:
        with engine.begin() as conn:
            _configure(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
