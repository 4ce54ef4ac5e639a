"""Fixtures shared by every suite: databases (SQLite and a private PostgreSQL) and a frozen clock."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from poiesis.adapters.sqlalchemy.direct import DirectPostgres
from poiesis.adapters.sqlalchemy.engine import create_engine, migrate
from poiesis.adapters.sqlalchemy.store import SqlAlchemyTaskStore
from poiesis.adapters.sqlalchemy.threaded import ThreadedSqlite
from tests.support import postgres

_databases = itertools.count()


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        self.elapsed = 0.0

    def now(self) -> datetime:
        return self.current

    def monotonic(self) -> float:
        return self.elapsed

    def advance(self, seconds: float = 1.0) -> None:
        self.current += timedelta(seconds=seconds)
        self.elapsed += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    if not postgres.available():
        pytest.skip("PostgreSQL is not installed: run scripts/test, or apt-get install postgresql")
    with postgres.private_postgres() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_template(postgres_server: str) -> str:
    """A migrated database that each test's database is copied from."""

    async def build() -> None:
        admin = create_engine(postgres_server)
        async with admin.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(sa.text("DROP DATABASE IF EXISTS poiesis_template"))
            await conn.execute(sa.text("CREATE DATABASE poiesis_template"))
        await admin.dispose()
        engine = create_engine(_with_db(postgres_server, "poiesis_template"))
        await migrate(engine)
        await engine.dispose()

    # Session fixtures may be first requested from inside a test's running loop: use a thread.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, build()).result()
    return "poiesis_template"


def _with_db(url: str, name: str) -> str:
    return sa.make_url(url).set(database=name).render_as_string(hide_password=False)


async def fresh_postgres_url(server: str, template: str) -> str:
    name = f"poiesis_t{next(_databases)}"
    admin = create_engine(server)
    async with admin.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        await conn.execute(sa.text(f"CREATE DATABASE {name} TEMPLATE {template}"))
    await admin.dispose()
    return _with_db(server, name)


def fresh_postgres_url_sync(server: str, template: str) -> str:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, fresh_postgres_url(server, template)).result()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, migrated database of each kind."""
    return await fresh_database(request, request.param, tmp_path)


async def fresh_database(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'poiesis.db'}"
        engine = create_engine(url)
        await migrate(engine)
        await engine.dispose()
        return url
    server = request.getfixturevalue("postgres_server")
    template = request.getfixturevalue("postgres_template")
    return await fresh_postgres_url(server, template)


@pytest.fixture
async def engines(database_url: str) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    writer = create_engine(database_url, writer=True)
    reader = create_engine(database_url, writer=False) if database_url.startswith("sqlite") else writer
    yield writer, reader
    await writer.dispose()
    if reader is not writer:
        await reader.dispose()


@pytest.fixture
async def store(
    engines: tuple[AsyncEngine, AsyncEngine], database_url: str
) -> AsyncIterator[SqlAlchemyTaskStore]:
    """The store as the API has it: on PostgreSQL, its hot statements through asyncpg directly; on
    SQLite, its reads and creates in worker threads."""
    writer, reader = engines
    sqlite = database_url.startswith("sqlite")
    direct = None if sqlite else DirectPostgres(database_url, size=5)
    threads = ThreadedSqlite(database_url) if sqlite else None
    yield SqlAlchemyTaskStore(writer, reader=reader, direct=direct, threads=threads)
    if direct is not None:
        await direct.close()
    if threads is not None:
        await threads.close()
