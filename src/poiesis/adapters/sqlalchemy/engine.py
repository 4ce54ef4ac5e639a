"""Engines for the two databases, and the migrations that build their schema.

SQLite serialises writers. Its write transactions start with BEGIN IMMEDIATE, so a guarded
read-then-update never fails half-way with "database is locked", and they wait for each other
(busy_timeout) instead of failing; readers use a second engine and never wait for the write lock
(WAL). PostgreSQL needs none of this: a row lock (SELECT ... FOR UPDATE) guards a transition.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")


def is_sqlite(url: str) -> bool:
    return sa.make_url(url).get_backend_name() == "sqlite"


def async_url(url: str) -> str:
    """Accept plain URLs (postgresql://, sqlite:///) and pick the async driver."""
    u = sa.make_url(url)
    backend = u.get_backend_name()
    if backend == "postgresql":
        u = u.set(drivername="postgresql+asyncpg")
    elif backend == "sqlite":
        u = u.set(drivername="sqlite+aiosqlite")
    else:
        raise ValueError(f"unsupported database {backend!r}: use postgresql:// or sqlite://")
    return u.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: Any) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    # A commit is on disk when it returns (the WAL synced at each commit): a task answered 200
    # survives a power cut. NORMAL would sync only at checkpoints. Creates commit in groups, so the
    # sync is paid once per group.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA case_sensitive_like=ON")  # name_prefix is case-sensitive
    cursor.close()


def _sqlite_session(engine: sa.Engine, writer: bool) -> None:
    """Every connection of `engine` set up as SQLite's are here; `writer`: BEGIN IMMEDIATE."""

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        _sqlite_pragmas(dbapi_connection)

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")


def create_engine(url: str, *, writer: bool = True, pool_size: int = 20) -> AsyncEngine:
    """An engine for `url`. For SQLite, `writer` chooses BEGIN IMMEDIATE (writes) or deferred (reads).
    `pool_size=0` keeps no connection open between uses (PostgreSQL)."""
    if is_sqlite(url):
        engine = create_async_engine(async_url(url), connect_args={"timeout": 30})
        _sqlite_session(engine.sync_engine, writer)
        return engine
    if pool_size == 0:
        # No pool: each use opens a connection and closes it (the recorder of thousands of Pods
        # must not hold idle connections).
        return create_async_engine(async_url(url), poolclass=NullPool)
    # No overflow: connections above the pool size would be closed on every return, and each new
    # asyncpg connection costs a backend start and type introspection. Excess requests queue instead.
    # No pre-ping (a round trip per checkout): a connection a database restart has broken fails its
    # first statement, which invalidates every connection of the pool opened before it, and the
    # store tries such an operation once more on a fresh connection (`translation.ConnectionLost`).
    return create_async_engine(async_url(url), pool_size=pool_size, max_overflow=0, pool_timeout=30)


def _json_text(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def create_sqlite_engine(url: str, *, writer: bool, pool_size: int) -> sa.Engine:
    """A synchronous engine (the sqlite3 module) for SQLite's `url`, its connections set up as the
    asynchronous engines' are; for use from worker threads (`threaded`)."""
    u = sa.make_url(url).set(drivername="sqlite+pysqlite")
    engine = sa.create_engine(
        u,
        connect_args={"timeout": 30},
        pool_size=pool_size,
        max_overflow=0,
        json_serializer=_json_text,
        json_deserializer=msgspec.json.decode,
    )
    _sqlite_session(engine, writer)
    return engine


def alembic_config(connection: Connection | None = None) -> Config:
    # alembic is imported where it is used: the recorder in every task Pod never migrates.
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to `revision`. Safe to run concurrently on PostgreSQL (an advisory lock)."""

    from alembic import command

    def upgrade(connection: Connection) -> None:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7355608)")
        command.upgrade(alembic_config(connection), revision)

    async with engine.begin() as conn:
        await conn.run_sync(upgrade)


async def current_revision(engine: AsyncEngine) -> str | None:
    from alembic.migration import MigrationContext

    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(read)
