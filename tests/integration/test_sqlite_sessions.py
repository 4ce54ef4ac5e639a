"""SQLite's connections as Poiesis opens them, and the worker threads its reads and creates run in."""

from __future__ import annotations

import asyncio
import contextvars
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from poiesis.adapters.sqlalchemy import schema as t
from poiesis.adapters.sqlalchemy.engine import create_engine, migrate
from poiesis.adapters.sqlalchemy.threaded import ThreadedSqlite
from poiesis.domain.errors import Conflict
from poiesis.ports.store import StoreUnavailable

INSERT = (
    "INSERT INTO task (id, owner, state, created_at, tags) VALUES ('{}', '', 'QUEUED', '2026-01-02', '{{}}')"
)
SETTINGS = "SELECT * FROM pragma_foreign_keys, pragma_journal_mode, pragma_synchronous"
FULL = 2


@pytest.fixture
async def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'poiesis.db'}"
    engine = create_engine(url)
    await migrate(engine)
    await engine.dispose()
    return url


async def test_every_connection_enforces_keys_and_syncs_each_commit_to_disk(url: str) -> None:
    """WAL, foreign keys on, and synchronous=FULL (a commit is on disk when it returns) on the
    asynchronous writer and reader and on the worker threads' connections alike."""
    seen = []
    for writer in (True, False):
        engine = create_engine(url, writer=writer)
        async with engine.connect() as conn:
            seen.append(tuple((await conn.exec_driver_sql(SETTINGS)).one()))
            like = (await conn.exec_driver_sql("SELECT 'A' LIKE 'a'")).scalar_one()
            assert like == 0  # name_prefix is case-sensitive
        await engine.dispose()
    threads = ThreadedSqlite(url)
    try:
        seen.append(await threads.read(lambda conn: tuple(conn.exec_driver_sql(SETTINGS).one())))
        seen.append(await threads.write(lambda conn: tuple(conn.exec_driver_sql(SETTINGS).one())))
    finally:
        await threads.close()
    assert seen == [(1, "wal", FULL)] * 4


async def test_a_write_runs_off_the_event_loop_in_its_callers_context_and_commits(url: str) -> None:
    threads = ThreadedSqlite(url)
    caller: contextvars.ContextVar[str] = contextvars.ContextVar("caller")
    caller.set("request 1")
    seen: dict[str, object] = {}

    def write(conn: sa.Connection) -> None:
        seen["thread"] = threading.get_ident()
        seen["caller"] = caller.get()
        conn.exec_driver_sql(INSERT.format("t1"))

    try:
        await threads.write(write)
        ids = await threads.read(lambda conn: list(conn.execute(sa.select(t.task.c.id)).scalars()))
    finally:
        await threads.close()
    assert ids == ["t1"]
    assert seen["caller"] == "request 1"
    assert seen["thread"] != threading.get_ident()


async def test_a_failed_write_commits_nothing_and_a_key_taken_is_the_callers_conflict(url: str) -> None:
    threads = ThreadedSqlite(url)
    insert = sa.insert(t.task)
    row = {
        "id": "a",
        "owner": "",
        "state": "QUEUED",
        "created_at": datetime(2026, 1, 2, tzinfo=UTC),
        "tags": {},
    }

    def two_then_fail(conn: sa.Connection) -> None:
        conn.execute(insert, [row | {"id": "b"}])
        conn.execute(insert, [row])
        conn.execute(insert, [row])

    try:
        with pytest.raises(Conflict, match="task a already exists"):
            await threads.write(two_then_fail, conflict="task a already exists")
        count = await threads.read(
            lambda conn: conn.execute(sa.select(sa.func.count()).select_from(t.task)).scalar()
        )
    finally:
        await threads.close()
    assert count == 0


async def test_while_another_holds_the_write_lock_reads_answer_and_the_event_loop_runs(url: str) -> None:
    """A write waits for SQLite's lock in its thread (busy_timeout), not on the event loop; a read
    never waits for the write lock (WAL)."""
    path = sa.make_url(url).database
    assert path is not None
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute(INSERT.format("held"))
    threads = ThreadedSqlite(url)
    try:
        waiting = asyncio.ensure_future(
            threads.write(lambda conn: conn.exec_driver_sql(INSERT.format("after")))
        )
        ticks = 0
        for _ in range(20):
            await asyncio.sleep(0.01)
            ticks += 1
        assert not waiting.done()  # still waiting for the lock, and the loop ran meanwhile
        ids = await asyncio.wait_for(
            threads.read(lambda conn: list(conn.execute(sa.select(t.task.c.id)).scalars())), timeout=5
        )
        assert ids == []  # the held transaction is not committed: not seen
        holder.execute("COMMIT")
        await asyncio.wait_for(waiting, timeout=10)
        ids = await threads.read(lambda conn: sorted(conn.execute(sa.select(t.task.c.id)).scalars()))
    finally:
        holder.close()
        await threads.close()
    assert ticks == 20
    assert ids == ["after", "held"]


async def test_a_database_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    threads = ThreadedSqlite(f"sqlite:///{tmp_path / 'missing' / 'poiesis.db'}")
    try:
        with pytest.raises(StoreUnavailable):
            await threads.read(lambda conn: conn.exec_driver_sql("SELECT 1").scalar())
    finally:
        await threads.close()
