"""Engines, sessions, request slots, the market version, and migrations.

SQLite (the embedded default) gets explicit transactions: pysqlite's implicit ones would let a
read-only snapshot see two different states, and a deferred transaction that later writes can
fail with SQLITE_BUSY under concurrent writers. So reads begin DEFERRED, writes IMMEDIATE
(one writer at a time, waiting up to the busy timeout). PostgreSQL runs READ COMMITTED for
requests that write, REPEATABLE READ for market snapshots, and autocommit for requests that
only read (each statement its own snapshot, as READ COMMITTED gives anyway, without the
BEGIN and ROLLBACK round trips).

Overload: a request must hold one of :class:`RequestSlots` (as many as the pool has
connections) before it opens a session. Waiting for a slot costs no thread and no connection,
so the thread pool and the connection pool can never starve each other; a request that waits
longer than ``queue_timeout_s`` is answered 503 with ``Retry-After``. Readiness probes use
their own connection (:meth:`Database.ping`), never the request pool.
"""

from __future__ import annotations

import asyncio
import random
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool
from sqlmodel import Session, col

from service.config import DatabaseSettings
from service.errors import ServiceUnavailableError
from service.models import MARKET_STATE_STRIPES, MarketState

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _install_sqlite_pragmas(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def make_engine(url: str, settings: DatabaseSettings | None = None) -> Engine:
    settings = settings or DatabaseSettings()
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            echo=settings.echo,
            pool_size=settings.pool_size,
            max_overflow=settings.max_overflow,
            pool_timeout=settings.pool_timeout_s,
            connect_args={
                "check_same_thread": False,
                "timeout": settings.sqlite_busy_timeout_ms / 1000,
            },
        )
        _install_sqlite_pragmas(engine, settings.sqlite_busy_timeout_ms)
        return engine
    # No pre-ping (a round trip on every checkout): a connection found dead fails its request
    # with 503, and SQLAlchemy then drops every pooled connection of that generation.
    return create_engine(
        url,
        echo=settings.echo,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout_s,
        connect_args={"connect_timeout": settings.connect_timeout_s},
    )


class RequestSlots:
    """At most ``size`` requests hold a database session at once (see the module doc)."""

    def __init__(self, size: int, timeout_s: float) -> None:
        self.size = size
        self.timeout_s = timeout_s
        # one semaphore per event loop (tests run several loops in one process)
        self._semaphores: weakref.WeakKeyDictionary[Any, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._semaphores.get(loop)
        if sem is None:
            sem = self._semaphores[loop] = asyncio.Semaphore(self.size)
        return sem

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        sem = self._semaphore()
        try:
            await asyncio.wait_for(sem.acquire(), self.timeout_s)
        except TimeoutError:
            raise ServiceUnavailableError(
                f"the service is at capacity (no database slot within {self.timeout_s} s); "
                "retry shortly",
                headers={"Retry-After": "1"},
            ) from None
        try:
            yield
        finally:
            sem.release()


class Database:
    """One engine, the kinds of session the service opens on it, and the request slots."""

    def __init__(self, url: str, settings: DatabaseSettings | None = None) -> None:
        settings = settings or DatabaseSettings()
        self.url = url
        self.engine = make_engine(url, settings)
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            self._write_bind: Engine = self.engine.execution_options(sqlite_begin="IMMEDIATE")
            self._read_bind: Engine = self.engine
            self._snapshot_bind: Engine = self.engine
        else:
            self._write_bind = self.engine
            self._read_bind = self.engine.execution_options(isolation_level="AUTOCOMMIT")
            self._snapshot_bind = self.engine.execution_options(isolation_level="REPEATABLE READ")
        connections = settings.pool_size + settings.max_overflow
        self.slots = RequestSlots(
            min(settings.request_slots, connections), settings.queue_timeout_s
        )
        self._probe: Engine | None = None
        self._connect_timeout_s = settings.connect_timeout_s

    def session(self, *, write: bool = True) -> Session:
        return Session(self._write_bind if write else self._read_bind, expire_on_commit=False)

    def closes_without_io(self, *, write: bool) -> bool:
        """Closing a PostgreSQL autocommit (read) session sends nothing to the server: its
        connection is never inside a transaction, so the event loop may close it."""
        return not write and self.dialect == "postgresql"

    @contextmanager
    def snapshot_session(self) -> Iterator[Session]:
        """A read-only transaction that sees one consistent state of the whole database."""
        with Session(self._snapshot_bind, expire_on_commit=False) as session:
            yield session
            session.rollback()

    def ping(self) -> str | None:
        """The migration revision, read on a connection of its own (never queued behind
        requests); raises when the database cannot be reached."""
        if self.dialect == "sqlite":
            probe = self.engine
        else:
            if self._probe is None:
                self._probe = create_engine(
                    self.url,
                    poolclass=NullPool,
                    connect_args={"connect_timeout": self._connect_timeout_s},
                )
            probe = self._probe
        from alembic.runtime.migration import MigrationContext

        with probe.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def dispose(self) -> None:
        self.engine.dispose()
        if self._probe is not None:
            self._probe.dispose()


_SUPPLY_CHANGED = "cdmo_supply_changed"


def mark_supply_changed(session: Session) -> None:
    """This transaction changes the supply side (sites, certifications, listings, held
    hours): its :func:`bump_market_version` bumps the supply version too."""
    session.info[_SUPPLY_CHANGED] = True


@event.listens_for(Session, "after_rollback")
def _forget_supply_mark(session: Session) -> None:
    session.info.pop(_SUPPLY_CHANGED, None)


def bump_market_version(session: Session, *, supply: bool = False) -> None:
    """Call last in every transaction that changes the market: it adds one to a random stripe
    of the version (see :class:`service.models.MarketState`), taking that row's lock last, so
    two writers never wait on each other in opposite orders and rarely on each other at all.
    The version becomes visible with the transaction's commit, never before. ``supply`` (or
    an earlier :func:`mark_supply_changed`): the stripe's supply version moves too, in the
    same statement."""
    session.flush()
    values: dict[str, Any] = {"version": MarketState.version + 1}
    if session.info.pop(_SUPPLY_CHANGED, False) or supply:
        values["supply_version"] = MarketState.supply_version + 1
    session.execute(
        update(MarketState)
        .where(col(MarketState.id) == random.randint(1, MARKET_STATE_STRIPES))
        .values(**values)
        # No ORM synchronisation: it would scan every object in the session (thousands in an
        # optimiser batch) for a row that is never loaded as an object.
        .execution_options(synchronize_session=False)
    )


def read_market_version(session: Session) -> int:
    """The market version as of the session's snapshot: it grows by one with every committed
    market write."""
    stmt = select(func.coalesce(func.sum(col(MarketState.version)), 0))
    return int(session.execute(stmt).scalar_one())


def read_supply_version(session: Session) -> int:
    """The supply version as of the session's snapshot (the sum of its stripes): it grows
    with every committed write to sites, listings or held hours."""
    stmt = select(func.coalesce(func.sum(col(MarketState.supply_version)), 0))
    return int(session.execute(stmt).scalar_one())


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("file_template", "%%(year)d%%(month).2d%%(day).2d_%%(rev)s_%%(slug)s")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)


def downgrade(engine: Engine, revision: str) -> None:
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
