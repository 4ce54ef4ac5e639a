"""PostgreSQL's hot statements sent straight through an asyncpg pool.

A create, a GET and a page are each one statement, and most of their cost was SQLAlchemy's
connection, execution context and greenlet bridge around it. Here the statements are still built
with SQLAlchemy (one source of SQL), compiled once to asyncpg's text and sent by asyncpg, which
prepares each once per connection and keeps it. Every statement runs on its own in autocommit.

The pools hold no connection until one is needed and close those idle for five minutes. A
connection the database closed (a restart) is replaced by the pool when it notices; one found
broken under a statement expires every connection the pool holds, like SQLAlchemy's pool does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect

from poiesis.adapters.postgres.errors import asyncpg_errors
from poiesis.adapters.postgres.records import dsn

_DIALECT = asyncpg_dialect.dialect()  # type: ignore[no-untyped-call]


class Statement:
    """A SQLAlchemy statement compiled for asyncpg (or `dialect`): its text, and its parameters'
    names in order."""

    __slots__ = ("names", "sql")

    def __init__(self, statement: sa.Executable, dialect: sa.Dialect = _DIALECT) -> None:
        compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
        self.sql: str = compiled.string
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[n] for n in self.names]

    @classmethod
    def bound(cls, statement: sa.Executable) -> tuple[str, list[Any]]:
        """The text and arguments of a statement whose values are bound in it (built per call)."""
        compiled = statement.compile(dialect=_DIALECT)  # type: ignore[attr-defined]
        params = compiled.params
        return compiled.string, [params[n] for n in compiled.positiontup or ()]


async def _kept(_: asyncpg.Connection) -> None:
    """A connection goes back to the pool as it is: its statements leave no session state behind
    (each commits on its own, none sets, locks, listens or opens a cursor), so the round trip of
    asyncpg's reset is saved."""


# A page's plan is made for its own values, and costs a random read of the table near a sequential
# one (the tasks' pages are read from memory, or an SSD): PostgreSQL's default of 4 chose to walk
# the primary key past thousands of recent tasks for a state on 5% of them (3.8 ms) rather than
# read that state's index (0.4 ms). No parallel workers: starting them costs a page of 256 more
# than it saves, and under load they wait for the cores the API needs (p99 126 ms for four filters).
PAGE_SETTINGS = {
    "plan_cache_mode": "force_custom_plan",
    "random_page_cost": "1.1",
    "max_parallel_workers_per_gather": "0",
}


class DirectPostgres:
    """Two pools: one for the statements of fixed shape (a create, a GET, a state), which
    PostgreSQL may plan once for all their runs, and one for pages, planned for each run's own
    values: asyncpg prepares every statement, and after five runs PostgreSQL may settle on one
    generic plan for all parameters, while a page's best plan depends on how selective its
    filter's values are (a tag on 90% of tasks or on one: 141 ms instead of 15 ms)."""

    def __init__(self, url: str, *, size: int, timeout: float = 30) -> None:
        self._dsn = dsn(url)
        self._size = size
        self._timeout = timeout
        self._pools: dict[bool, asyncpg.Pool] = {}
        self._opening = asyncio.Lock()
        self.observe: Callable[[str], AbstractContextManager[Any]] | None = None
        """Wraps each statement given its text (tracing: a span per statement, as SQLAlchemy's
        instrumentation makes for the engine's); None: nothing."""

    def _observed(self, sql: str) -> AbstractContextManager[Any]:
        return self.observe(sql) if self.observe is not None else contextlib.nullcontext()

    async def _connected(self, pages: bool) -> asyncpg.Pool:
        pool = self._pools.get(pages)
        if pool is None:
            async with self._opening:
                pool = self._pools.get(pages)
                if pool is None:
                    pool = self._pools[pages] = await asyncpg.create_pool(
                        self._dsn,
                        min_size=0,
                        max_size=max(2, self._size // 2) if pages else self._size,
                        max_inactive_connection_lifetime=300,
                        timeout=self._timeout,
                        reset=_kept,
                        server_settings=PAGE_SETTINGS if pages else {},
                    )
        return pool

    async def close(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.close()

    @contextlib.asynccontextmanager
    async def _connection(
        self, conflict: str | None, *, pages: bool = False
    ) -> AsyncIterator[asyncpg.Connection]:
        async with asyncpg_errors(conflict=conflict, on_lost=self._expire):
            pool = await self._connected(pages)
            async with pool.acquire(timeout=self._timeout) as conn:
                yield conn

    async def _expire(self) -> None:
        for pool in list(self._pools.values()):
            await pool.expire_connections()

    async def execute(
        self, statement: Statement, params: Mapping[str, Any], *, conflict: str | None = None
    ) -> None:
        async with self._connection(conflict) as conn:
            with self._observed(statement.sql):
                await conn.execute(statement.sql, *statement.args(params))

    async def value(self, statement: Statement, params: Mapping[str, Any]) -> Any:
        async with self._connection(None) as conn:
            with self._observed(statement.sql):
                return await conn.fetchval(statement.sql, *statement.args(params))

    async def rows(self, sql: str, args: Sequence[Any]) -> list[asyncpg.Record]:
        """The rows of a page's statement, planned for its own values."""
        async with self._connection(None, pages=True) as conn:
            with self._observed(sql):
                return list(await conn.fetch(sql, *args))
