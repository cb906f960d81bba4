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
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
from psycopg.rows import namedtuple_row
from psycopg.types.json import set_json_loads
from pydantic_core import from_json
from sqlalchemy import (
    CTE,
    ColumnElement,
    Connection,
    Engine,
    Row,
    Select,
    Update,
    bindparam,
    create_engine,
    event,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from sqlmodel import Session, col
from starlette.concurrency import run_in_threadpool

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


class _Queue:
    """The slots of one event loop: a semaphore, how many wait for it, and how long a slot
    is held (a moving average)."""

    def __init__(self, size: int) -> None:
        self.semaphore = asyncio.Semaphore(size)
        self.waiting = 0
        self.hold_s = 0.0


class RequestSlots:
    """At most ``size`` requests hold a database session at once (see the module doc).

    Adaptive admission: a request that finds every slot taken is answered 503 at once when
    the wait it can expect (the requests queued before it, served ``size`` at a time, each
    holding its slot for the recent average) exceeds ``budget_s``; otherwise it waits up to
    ``timeout_s`` (a budget of 0: always). So under overload the API answers quickly, the
    request or a 503 with Retry-After, instead of queueing every request up to ``timeout_s``."""

    HOLD_WEIGHT = 0.05  # of the newest hold in the moving average: ~20 requests' memory

    def __init__(self, size: int, timeout_s: float, budget_s: float = 0.0) -> None:
        self.size = size
        self.timeout_s = timeout_s
        self.budget_s = budget_s
        # one queue per event loop (tests run several loops in one process)
        self._queues: weakref.WeakKeyDictionary[Any, _Queue] = weakref.WeakKeyDictionary()

    def _queue(self) -> _Queue:
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = _Queue(self.size)
        return queue

    def _refuse(self, why: str) -> ServiceUnavailableError:
        return ServiceUnavailableError(
            f"the service is at capacity ({why}); retry shortly", headers={"Retry-After": "1"}
        )

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        queue = self._queue()
        sem = queue.semaphore
        if sem.locked() and self.budget_s > 0:
            expected_s = (queue.waiting + 1) * queue.hold_s / self.size
            if expected_s > self.budget_s:
                raise self._refuse(
                    f"a database slot expected in {1000 * expected_s:.0f} ms, over the "
                    f"{1000 * self.budget_s:.0f} ms budget"
                )
        if sem.locked():
            queue.waiting += 1
            try:
                await asyncio.wait_for(sem.acquire(), self.timeout_s)
            except TimeoutError:
                raise self._refuse(f"no database slot within {self.timeout_s} s") from None
            finally:
                queue.waiting -= 1
        else:  # a free slot: taken at once, without wait_for's task
            await sem.acquire()
        started = time.monotonic()
        try:
            yield
        finally:
            sem.release()
            held = time.monotonic() - started
            weight = self.HOLD_WEIGHT if queue.hold_s else 1.0  # the first hold sets it
            queue.hold_s += weight * (held - queue.hold_s)


class LoopReads:
    """Autocommit reads awaited on the event loop, for the hottest read endpoints: no thread
    hop, no Session, no ORM (README "Under load"). Each read holds a request slot, like a
    session. PostgreSQL: SQLAlchemy asyncio over psycopg's async connections, one engine per
    event loop (a connection belongs to the loop that opened it; tests run several loops in
    one process), at most one connection per slot. SQLite (no async driver here): the sync
    engine in a worker thread."""

    def __init__(
        self, url: str, settings: DatabaseSettings, slots: RequestSlots, sync: Engine | None
    ) -> None:
        self.url = url
        self.dialect = make_url(url).get_backend_name()
        self.settings = settings
        self.slots = slots
        self._sync = sync  # SQLite's read engine
        self._engines: weakref.WeakKeyDictionary[Any, AsyncEngine] = weakref.WeakKeyDictionary()

    def _engine(self) -> AsyncEngine:
        loop = asyncio.get_running_loop()
        engine = self._engines.get(loop)
        if engine is None:
            engine = self._engines[loop] = create_async_engine(
                self.url,
                pool_size=self.slots.size,
                max_overflow=0,
                pool_timeout=self.settings.pool_timeout_s,
                connect_args={"connect_timeout": self.settings.connect_timeout_s},
            ).execution_options(isolation_level="AUTOCOMMIT")
        return engine

    async def rows(self, stmt: Select[Any], params: dict[str, Any] | None = None) -> list[Row[Any]]:
        async with self.slots.hold():
            if self._sync is not None:
                return await run_in_threadpool(self._sync_rows, self._sync, stmt, params)
            async with self._engine().connect() as conn:
                return list(await conn.execute(stmt, params))

    @staticmethod
    def _sync_rows(engine: Engine, stmt: Select[Any], params: Any) -> list[Row[Any]]:
        with engine.connect() as conn:
            return list(conn.execute(stmt, params))

    def engines(self) -> list[Engine]:
        """The engines of the event loops read on so far (PostgreSQL; for event listeners)."""
        return [e.sync_engine for e in self._engines.values()]

    async def close(self) -> None:
        """Close this event loop's connections (the app's shutdown)."""
        engine = self._engines.pop(asyncio.get_running_loop(), None)
        if engine is not None:
            await engine.dispose()


class RawStatement:
    """A statement of ours compiled once for PostgreSQL with psycopg's ``%(name)s``
    placeholders, and the values it binds itself (e.g. the members of an ``IN`` list): what
    :class:`RawReads` runs. The statement stays defined once, with SQLAlchemy."""

    def __init__(self, stmt: Any) -> None:
        dialect = _PSYCOPG
        compiled = stmt.compile(dialect=dialect)
        # the parameters left to the caller (placeholders here), the others' values rendered
        # into the text where they expand (IN lists)
        open_ = {name: None for name, bind in compiled.binds.items() if bind.required}
        expanded = compiled.construct_expanded_state(open_)
        self.sql: str = expanded.statement
        self.defaults: dict[str, Any] = {
            k: v for k, v in expanded.parameters.items() if k not in open_
        }
        # what SQLAlchemy does to a value of the caller's before sending it (JSON -> Jsonb)
        self.processors: dict[str, Any] = {}
        for name in open_:
            bind_type = compiled.binds[name].type
            processor = bind_type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self.processors[name] = processor

    def params(self, **values: Any) -> dict[str, Any]:
        for name, processor in self.processors.items():
            if name in values:
                values[name] = processor(values[name])
        return {**self.defaults, **values}


_PSYCOPG = psycopg_dialect()


@cache
def raw_statement(stmt: Any) -> RawStatement:
    """:class:`RawStatement` of a statement built once (and kept) elsewhere."""
    return RawStatement(stmt)


class RawReads:
    """Autocommit reads on raw psycopg connections, for the lean path (service.hotpath): no
    SQLAlchemy between the request and the driver, each statement prepared by the server on
    its first use per connection. One stack of connections per event loop (as
    :class:`LoopReads`), opened on demand; a caller must hold a request slot, so a loop never
    has more connections than slots. A connection that fails is closed, not reused.
    ``listeners`` see every statement sent (tests count round trips with them)."""

    def __init__(self, url: str, settings: DatabaseSettings) -> None:
        parsed = make_url(url).set(drivername="postgresql")
        self.conninfo = parsed.render_as_string(hide_password=False)
        self.connect_timeout_s = settings.connect_timeout_s
        self.listeners: list[Any] = []
        self._free: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()

    async def rows(self, stmt: RawStatement, params: dict[str, Any]) -> list[Any]:
        """The rows of ``stmt`` (named tuples: columns by name, as an ORM row reads)."""
        free = self._free.get(asyncio.get_running_loop())
        if free is None:
            free = self._free[asyncio.get_running_loop()] = []
        conn = free.pop() if free else None
        if conn is None:
            conn = await psycopg.AsyncConnection.connect(
                self.conninfo,
                autocommit=True,
                prepare_threshold=0,
                row_factory=namedtuple_row,
                connect_timeout=self.connect_timeout_s,
            )
            # JSON columns parsed by pydantic's parser: the same values, a third of the CPU
            # of the standard library's (the lists of projects have four JSON columns a row)
            set_json_loads(from_json, conn)
        for listener in self.listeners:
            listener(stmt.sql)
        try:
            cursor = await conn.execute(stmt.sql, params)
            rows = await cursor.fetchall()
        except BaseException:
            await conn.close()
            raise
        free.append(conn)
        return rows

    async def close(self) -> None:
        """Close this event loop's connections (the app's shutdown)."""
        for conn in self._free.pop(asyncio.get_running_loop(), []):
            await conn.close()


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
            min(settings.request_slots, connections),
            settings.queue_timeout_s,
            settings.queue_budget_s,
        )
        self.reads = LoopReads(
            url, settings, self.slots, self._read_bind if self.dialect == "sqlite" else None
        )
        self.raw = RawReads(url, settings) if self.dialect == "postgresql" else None
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
    supply = session.info.pop(_SUPPLY_CHANGED, False) or supply
    session.execute(
        _bump(supply)
        # No ORM synchronisation: it would scan every object in the session (thousands in an
        # optimiser batch) for a row that is never loaded as an object.
        .execution_options(synchronize_session=False)
    )


def _bump(supply: bool, stripe: Any = None) -> Update:
    values: dict[str, Any] = {"version": MarketState.version + 1}
    if supply:
        values["supply_version"] = MarketState.supply_version + 1
    stripe = random.randint(1, MARKET_STATE_STRIPES) if stripe is None else stripe
    return update(MarketState).where(col(MarketState.id) == stripe).values(**values)


def market_bump_cte(written: ColumnElement[bool], *, supply: bool = False) -> CTE:
    """:func:`bump_market_version` as a CTE of a one-statement write
    (:meth:`service.transactions.Transaction.commit_at_once`): bumps only where ``written``
    holds (the write's CTE returned its row); the stripe is the parameter ``market_stripe``
    (:func:`market_bump_params`). It reads the write's CTE, so it runs after the write: the
    stripe's lock is still taken last."""
    return _bump(supply, bindparam("market_stripe")).where(written).cte("market_bumped")


def market_bump_params() -> dict[str, Any]:
    return {"market_stripe": random.randint(1, MARKET_STATE_STRIPES)}


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
