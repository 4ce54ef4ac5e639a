"""SQLite's reads and creates, each run whole in a worker thread.

aiosqlite hands every call of the driver (a cursor, an execute, a fetch, a commit) to its thread
and back to the event loop: eight hand-overs for a GET, 2 ms together on this machine for a read
SQLite itself answers in 50 us. Here an operation is a plain function of a synchronous SQLAlchemy
connection (the sqlite3 module), run in a worker thread from start to end: one hand-over, and
SQLite's own work done outside the event loop (the sqlite3 module lets the interpreter go while
SQLite runs).

Writes have one thread (SQLite has one writer at a time; a second would wait for the lock) and
reads a few, each with its own connection: in WAL mode a read never waits for a write. Each
operation runs in the context of its caller (a trace's current span).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import sqlalchemy as sa

from poiesis.adapters.sqlalchemy.engine import create_sqlite_engine
from poiesis.adapters.sqlalchemy.translation import translating

T = TypeVar("T")


class ThreadedSqlite:
    def __init__(self, url: str, *, readers: int = 4) -> None:
        self.writer = create_sqlite_engine(url, writer=True, pool_size=1)
        self.reader = create_sqlite_engine(url, writer=False, pool_size=readers)
        self._writes = ThreadPoolExecutor(1, thread_name_prefix="sqlite-write")
        self._reads = ThreadPoolExecutor(readers, thread_name_prefix="sqlite-read")

    async def read(self, work: Callable[[sa.Connection], T]) -> T:
        """`work` on a connection in one deferred transaction: one snapshot for all it reads."""
        with translating():
            return await self._run(self._reads, self._reading, work)

    async def write(self, work: Callable[[sa.Connection], T], *, conflict: str | None = None) -> T:
        """`work` in one write transaction (BEGIN IMMEDIATE), committed when it returns and rolled
        back when it raises; `conflict`: what a unique key already taken means to the caller."""
        with translating(conflict):
            return await self._run(self._writes, self._writing, work)

    def _reading(self, work: Callable[[sa.Connection], T]) -> T:
        with self.reader.connect() as conn:
            return work(conn)

    def _writing(self, work: Callable[[sa.Connection], T]) -> T:
        with self.writer.begin() as conn:
            return work(conn)

    @staticmethod
    async def _run(
        pool: ThreadPoolExecutor,
        run: Callable[[Callable[[sa.Connection], T]], T],
        work: Callable[[sa.Connection], T],
    ) -> T:
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(pool, context.run, run, work)

    async def close(self) -> None:
        """Wait for the operations under way, then close every connection."""

        def close() -> None:
            for pool in (self._writes, self._reads):
                pool.shutdown(wait=True)
            self.writer.dispose()
            self.reader.dispose()

        await asyncio.to_thread(close)
