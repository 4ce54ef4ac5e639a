"""The TaskStore contract (tests/contracts/store.py) run against SQLite and PostgreSQL, and what only a
database can show: the trigger-kept counts against a direct count, and the migration's backfill."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from poiesis.adapters.postgres.records import PostgresTaskRecords
from poiesis.adapters.sqlalchemy import schema
from poiesis.adapters.sqlalchemy.direct import DirectPostgres
from poiesis.adapters.sqlalchemy.engine import alembic_config, migrate
from poiesis.adapters.sqlalchemy.store import SqlAlchemyTaskStore
from poiesis.adapters.sqlalchemy.threaded import ThreadedSqlite
from poiesis.domain.errors import Conflict
from poiesis.domain.listing import TaskQuery
from poiesis.domain.states import State
from poiesis.domain.tes import OutputFileLog, View
from poiesis.domain.views import encoded
from poiesis.ports.store import ExecutorRan, Moved, OutputsRecorded
from tests.builders import make_task
from tests.conftest import FakeClock, fresh_database
from tests.contracts.store import *  # noqa: F403 - the contract's tests, collected here
from tests.contracts.store import NOW


@pytest.fixture(
    params=[
        "sqlite",
        "sqlite-engine",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("postgres-engine", marks=pytest.mark.postgres),
        pytest.param("postgres-records", marks=pytest.mark.postgres),
    ]
)
def kind(request: pytest.FixtureRequest) -> str:
    """sqlite: the store as the API has it (its reads and creates in worker threads); sqlite-engine:
    through aiosqlite alone; postgres: as the API has it (its hot statements through asyncpg
    directly); postgres-engine: as the controller has it (SQLAlchemy's engine alone);
    postgres-records: with `get`, `state` and every write of a task's progress by the Task
    Recorder's store."""
    return str(request.param)


@pytest.fixture
async def database_url(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> str:
    return await fresh_database(request, kind.split("-")[0], tmp_path)


class RecordsInStore:
    """The SQLAlchemy store whose reads of a task and writes of its progress are
    PostgresTaskRecords' (the Task Recorder's store), so the contract holds for those."""

    def __init__(self, store: SqlAlchemyTaskStore, records: PostgresTaskRecords) -> None:
        self._store = store
        self._records = records
        self.get = records.get
        self.state = records.state
        self.apply = records.apply

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def transition(self, task_id: str, target: State, *, now: datetime, **given: Any) -> bool:
        return bool((await self.apply(task_id, [Moved(target=target, at=now, **given)])).moved)

    async def record_executor(self, task_id: str, index: int, **given: Any) -> None:
        await self.apply(task_id, [ExecutorRan(index=index, **given)])

    async def add_output_files(self, task_id: str, files: list[OutputFileLog]) -> None:
        await self.apply(task_id, [OutputsRecorded(files=files)])


@pytest.fixture
async def store(kind: str, engines: tuple[AsyncEngine, AsyncEngine], database_url: str) -> AsyncIterator[Any]:
    writer, reader = engines
    direct = DirectPostgres(database_url, size=5) if kind == "postgres" else None
    threads = ThreadedSqlite(database_url) if kind == "sqlite" else None
    store = SqlAlchemyTaskStore(writer, reader=reader, direct=direct, threads=threads)
    yield RecordsInStore(store, PostgresTaskRecords(database_url)) if kind == "postgres-records" else store
    if direct is not None:
        await direct.close()
    if threads is not None:
        await threads.close()


async def _downgrade(conn: AsyncConnection, revision: str) -> None:
    """The database taken down to `revision`, in `conn`'s transaction."""
    await conn.run_sync(lambda sync: command.downgrade(alembic_config(sync), revision))


async def _counted_directly(store: SqlAlchemyTaskStore) -> dict[State, int]:
    from poiesis.adapters.sqlalchemy import schema

    async with store._reader.connect() as conn:
        rows = await conn.execute(
            sa.select(schema.task.c.state, sa.func.count()).group_by(schema.task.c.state)
        )
        return {State(r[0]): int(r[1]) for r in rows}


async def test_the_state_counts_stay_exact_under_concurrent_writers(
    store: SqlAlchemyTaskStore, clock: FakeClock
) -> None:
    rng = random.Random(11)
    tasks = [make_task(clock) for _ in range(30)]
    targets = [s for s in State if s is not State.UNKNOWN]

    async def life(task_id: str) -> None:
        for target in rng.sample(targets, k=4):
            await store.transition(task_id, target, now=NOW)

    async def create_then_live(index: int) -> None:
        task = tasks[index]
        await store.create(task, owner="a", system_logs=[])
        with pytest.raises(Conflict):
            await store.create(task, owner="a", system_logs=[])  # refused: counted once
        await asyncio.gather(life(task.id), life(task.id))

    await asyncio.gather(*(create_then_live(i) for i in range(len(tasks))))
    counts = await store.count_by_state()
    assert sum(counts.values()) == len(tasks)
    assert counts == await _counted_directly(store)


async def test_the_migration_counts_the_tasks_stored_before_it(
    store: SqlAlchemyTaskStore, clock: FakeClock, engines: tuple[AsyncEngine, AsyncEngine]
) -> None:
    ids = [make_task(clock).id for _ in range(5)]
    async with engines[0].begin() as conn:
        await _downgrade(conn, "0001")
        # Written as a store of revision 0001 wrote them.
        for task_id in ids:
            await conn.execute(
                sa.text(
                    "INSERT INTO task (id, owner, state, created_at, tags)"
                    " VALUES (:id, 'a', 'QUEUED', :at, '{}')"
                ),
                {"id": task_id, "at": NOW},
            )
        await conn.execute(
            sa.text("UPDATE task SET state = 'RUNNING' WHERE id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)
            ),
            {"ids": ids[:2]},
        )
    await migrate(engines[0])
    assert await store.count_by_state() == {State.QUEUED: 3, State.RUNNING: 2}
    await store.transition(ids[0], State.COMPLETE, now=NOW)
    assert await store.count_by_state() == {State.QUEUED: 3, State.RUNNING: 1, State.COMPLETE: 1}


async def _kept_document(engine: AsyncEngine, task_id: str) -> str | None:
    async with engine.connect() as conn:
        query = sa.text("SELECT basic_document FROM task WHERE id = :id")
        return (await conn.execute(query, {"id": task_id})).scalar_one()


@pytest.mark.parametrize(
    "kind",
    [
        "sqlite",
        *(
            pytest.param(k, marks=pytest.mark.postgres)
            for k in ("postgres", "postgres-engine", "postgres-records")
        ),
    ],
    indirect=True,
)
async def test_a_write_of_an_older_store_clears_the_kept_document_and_it_is_rendered_meanwhile(
    store: SqlAlchemyTaskStore, clock: FakeClock, engines: tuple[AsyncEngine, AsyncEngine]
) -> None:
    """The BASIC document kept with the task is never stale: a write that does not
    render it again (a recorder of an older image during an upgrade, an operator's SQL) clears it
    through the triggers, and reads render it until the next write of the store keeps it again."""
    engine = engines[0]
    task = make_task(clock, executors=2, tags={"project": "p1"})
    await store.create(task, owner="alice", system_logs=[])

    async def consistent() -> None:
        expected = msgspec.json.decode(encoded(await store.get(task.id, view=View.BASIC), View.BASIC))
        assert msgspec.json.decode(await store.document(task.id, view=View.BASIC)) == expected
        page = await store.documents(TaskQuery(view=View.BASIC, tags={"project": "p1"}))
        assert [msgspec.json.decode(d) for d in page.documents] == [expected]

    assert await _kept_document(engine, task.id) is not None
    await consistent()
    older_writes = [
        "UPDATE task SET state = 'RUNNING' WHERE id = :id",
        "UPDATE task_log SET start_time = CURRENT_TIMESTAMP WHERE task_id = :id",
        "INSERT INTO task_log (task_id, attempt) VALUES (:id, 1)",
        "INSERT INTO executor_log (task_id, attempt, idx, exit_code) VALUES (:id, 0, 0, 3)",
        "INSERT INTO output_file_log (task_id, attempt, url, path, size_bytes) VALUES (:id, 0, 'u', '/p', 7)",
        "UPDATE executor_log SET exit_code = 4 WHERE task_id = :id",
        'UPDATE task_log SET metadata = \'{"k": "v"}\' WHERE task_id = :id',
    ]
    for statement in older_writes:
        await store.apply(task.id, [ExecutorRan(index=1, stdout="kept again")])
        assert await _kept_document(engine, task.id) is not None, "the store keeps it"
        await consistent()
        async with engine.begin() as conn:
            await conn.execute(sa.text(statement), {"id": task.id})
        assert await _kept_document(engine, task.id) is None, statement
        await consistent()
    await store.transition(task.id, State.COMPLETE, now=NOW)
    assert await _kept_document(engine, task.id) is not None
    await consistent()
    assert msgspec.json.decode(await store.document(task.id, view=View.BASIC))["state"] == "COMPLETE"


@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["postgres"], indirect=True)
async def test_concurrent_creates_share_statements_and_a_refused_one_fails_alone(
    store: SqlAlchemyTaskStore, clock: FakeClock
) -> None:
    """PostgreSQL commits concurrent creates in groups (one statement, one commit each); a task the
    database refuses (a NUL byte, which the API's door stops first) fails on its own."""
    tasks = [make_task(clock, name=f"t{i}") for i in range(60)]
    refused = msgspec.structs.replace(make_task(clock, name="refused"), description="a\x00b")
    batch = [*tasks[:30], refused, *tasks[30:]]
    results = await asyncio.gather(
        *(store.create(t, owner="a", system_logs=[]) for t in batch), return_exceptions=True
    )
    assert [r is None for r in results] == [True] * 30 + [False] + [True] * 30
    assert store._creates.groups < len(batch) - 10  # grouped, and the refused one's group re-sent alone
    assert store._creates.split == 1
    page = await store.list_tasks(TaskQuery(page_size=100, view=View.MINIMAL))
    assert sorted(t.id for t in page.tasks) == sorted(t.id for t in tasks)


@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["postgres"], indirect=True)
async def test_groups_of_creates_from_two_api_processes_never_wait_on_each_other_in_a_cycle(
    store: SqlAlchemyTaskStore, engines: tuple[AsyncEngine, AsyncEngine], database_url: str, clock: FakeClock
) -> None:
    """Two stores (two API processes) committing groups at the same moment: no group fails. A
    random state-count shard per task row made two such groups deadlock until PostgreSQL broke
    one a second later; the shard follows the connection now (migration 0004)."""
    other_direct = DirectPostgres(database_url, size=5)
    other = SqlAlchemyTaskStore(engines[0], direct=other_direct)
    try:
        for wave in range(4):
            tasks = [make_task(clock, name=f"w{wave}-{i}") for i in range(40)]
            await asyncio.gather(
                *(
                    s.create(t, owner="a", system_logs=[])
                    for s, t in zip([store, other] * 20, tasks, strict=True)
                )
            )
        assert store._creates.split == other._creates.split == 0
        assert sum((await store.count_by_state()).values()) == 160
        assert store._creates.groups + other._creates.groups < 80
    finally:
        await other_direct.close()


@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["postgres"], indirect=True)
@pytest.mark.parametrize(
    ("tags", "index"),
    [({"sample": "s1"}, "ix_task_tag_values"), ({"rare": ""}, "ix_task_tag_keys")],
    ids=["key and value", "bare key"],
)
async def test_each_tag_filter_can_be_answered_by_its_index(
    store: SqlAlchemyTaskStore, clock: FakeClock, tags: dict[str, str], index: str
) -> None:
    """A page's tag filter is written as its index is built (migration 0005), so PostgreSQL can
    answer it there (here made to, with sequential scans off, as a small table would not be)."""
    for i in range(30):
        await store.create(make_task(clock, tags={"sample": f"s{i}"}), owner="a", system_logs=[])
    sql = store.documents_query(TaskQuery(tags=tags, page_size=10, view=View.BASIC)).compile(
        store._reader.engine.sync_engine, compile_kwargs={"literal_binds": True}
    )
    async with store._engine.begin() as conn:  # SET LOCAL: this transaction only
        await conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
        await conn.execute(sa.text("SET LOCAL enable_indexscan = off"))  # the primary key's walk too
        plan = "\n".join(r[0] for r in await conn.execute(sa.text(f"EXPLAIN {sql}")))
    assert index in plan, plan


@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["postgres"], indirect=True)
async def test_the_tag_indexes_pending_entries_stay_few(store: SqlAlchemyTaskStore, clock: FakeClock) -> None:
    """A GIN index's pending list, which every tag search reads whole, is merged once it passes
    256 kB (migration 0009), not 4 MB: 6,000 tasks (about 46 pages of pending entries) leave at
    most 33 pages pending."""
    for start in range(0, 6000, 100):
        await asyncio.gather(
            *(
                store.create(
                    make_task(clock, tags={"sample": f"s{i}", "run": f"r{i}", "bench": ""}),
                    owner="a",
                    system_logs=[],
                )
                for i in range(start, start + 100)
            )
        )
    async with store._engine.begin() as conn:
        await conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pgstattuple"))
        pending = {}
        for index in ("ix_task_tag_values", "ix_task_tag_keys"):
            stats = await conn.execute(
                sa.text("SELECT pending_pages, pending_tuples FROM pgstatginindex(:i ::regclass)"),
                {"i": index},
            )
            pending[index] = tuple(stats.one())
    page = await store.documents(TaskQuery(tags={"sample": "s7"}, page_size=10, view=View.BASIC))
    assert len(page.documents) == 1
    # A pending tuple holds a task's entries: 6,000 were made, most merged since.
    assert all(pages <= 33 for pages, _ in pending.values()), pending
    assert all(tasks < 4500 for _, tasks in pending.values()), pending


def _has_tags(tags: dict[str, str], wanted: dict[str, str]) -> bool:
    return all(k in tags and (v == "" or tags[k] == v) for k, v in wanted.items())


@pytest.mark.parametrize("rare", [1000, 3], ids=["tags counted rare", "tags counted common"])
async def test_a_tag_filter_finds_the_same_page_whether_its_tag_is_rare_or_common(
    store: SqlAlchemyTaskStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, rare: int
) -> None:
    """SQLite finds a page from a rare tag's rows and checks a common one on each task
    (`_rare_tag`); both give the page the filter asks for, pages followed to the end."""
    from poiesis.adapters.sqlalchemy import store as store_module

    monkeypatch.setattr(store_module, "RARE_TAG", rare)
    tags_of = [{"a": "1"} if i % 2 else {} for i in range(12)]
    for i in (1, 4, 5, 9):
        tags_of[i] = tags_of[i] | {"b": "2", "c": ""}
    tasks = [make_task(clock, tags=tags) for tags in tags_of]
    for task in tasks:
        await store.create(task, owner="a", system_logs=[])
    for wanted in ({"a": "1"}, {"b": "2"}, {"a": "1", "b": "2"}, {"b": "2", "c": ""}, {"a": "1", "c": ""}):
        expected = [t.id for t in reversed(tasks) if _has_tags(t.tags or {}, wanted)]
        got: list[str] = []
        after = None
        while True:
            page = await store.list_tasks(TaskQuery(tags=wanted, page_size=2, after=after))
            got += [t.id for t in page.tasks]
            if page.next_after is None:
                break
            after = page.next_after
        assert got == expected, wanted
        documents = await store.documents(TaskQuery(tags=wanted, page_size=50, view=View.BASIC))
        assert [msgspec.json.decode(d)["id"] for d in documents.documents] == expected


@pytest.mark.parametrize("kind", ["sqlite"], indirect=True)
async def test_sqlite_pages_share_a_statement_per_shape_of_filters_and_keep_few(
    store: SqlAlchemyTaskStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite compiles a page's statement once per shape of filters (`_pages`): pages that differ
    in their values only share one, tags given in any order included; a stream of new shapes (a
    request may hold 64 tag filters, valued or bare) keeps at most PAGE_SHAPES, and past that each
    page still gets its own right answer."""
    from poiesis.adapters.sqlalchemy import store as store_module

    monkeypatch.setattr(store_module, "PAGE_SHAPES", 3)
    tasks = [make_task(clock, name=f"n{i % 2}", tags={"a": str(i % 3), "b": ""}) for i in range(9)]
    for task in tasks:
        await store.create(task, owner="o", system_logs=[])

    async def page(**filters: Any) -> list[str]:
        found = await store.documents(TaskQuery(page_size=50, view=View.BASIC, **filters))
        return [msgspec.json.decode(d)["id"] for d in found.documents]

    def expected(name_prefix: str = "", tags: dict[str, str] | None = None, **_: Any) -> list[str]:
        newest_first = reversed(tasks)
        return [
            t.id
            for t in newest_first
            if (t.name or "").startswith(name_prefix) and _has_tags(t.tags or {}, tags or {})
        ]

    assert await page(name_prefix="n0") == expected(name_prefix="n0")
    assert await page(name_prefix="n1") == expected(name_prefix="n1")
    assert len(store._pages) == 1
    assert await page(tags={"a": "1", "b": ""}) == expected(tags={"a": "1"})
    assert await page(tags={"b": "", "a": "2"}) == expected(tags={"a": "2"})
    assert len(store._pages) == 2
    others: list[dict[str, Any]] = [
        {"state": State.QUEUED},
        {"tags": {"b": ""}},
        {"tags": {"a": "0"}},
        {"name_prefix": "n", "tags": {"b": ""}},
    ]
    for filters in others:
        assert await page(**filters) == expected(**filters), filters
    assert len(store._pages) == 3


@pytest.mark.parametrize("kind", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("filters", "index"),
    [
        ({"name_prefix": "align"}, "ix_task_id_name"),
        ({"name_prefix": "align", "state": State.QUEUED}, "ix_task_state_id_name"),
        ({"name_prefix": "align", "owner": "o"}, "ix_task_owner_id_name"),
        ({"name_prefix": "align", "owner": "o", "state": State.QUEUED}, "ix_task_owner_state_id_name"),
    ],
    ids=["prefix", "prefix and state", "prefix and owner", "prefix, owner and state"],
)
async def test_sqlite_checks_a_name_prefix_on_the_index_a_page_walks(
    store: SqlAlchemyTaskStore, clock: FakeClock, filters: dict[str, Any], index: str
) -> None:
    """SQLite's indexes that pages walk hold the name (migration 0010): a prefix rejects a task
    there, without a search of the table for its row."""
    for i in range(40):
        await store.create(
            make_task(clock, name=("align" if i % 5 == 0 else "call") + str(i)), owner="o", system_logs=[]
        )
    query = TaskQuery(page_size=10, view=View.BASIC, **filters)
    statement = store._page(query, schema.task.c.id, schema.task.c.basic_document)
    sql = statement.compile(store._reader.engine.sync_engine, compile_kwargs={"literal_binds": True})
    async with store._reader.connect() as conn:  # no ANALYZE: the store never runs one
        plan = " / ".join(r[3] for r in await conn.execute(sa.text(f"EXPLAIN QUERY PLAN {sql}")))
    assert f"INDEX {index}" in plan, plan
    page = await store.documents(query)
    assert len(page.documents) == 8


@pytest.mark.parametrize("kind", ["postgres"], indirect=True)
@pytest.mark.parametrize(
    ("filters", "walked"),
    [
        ({"name_prefix": "align"}, "ix_task_id_name"),
        ({"name_prefix": "align", "tags": {"bench": ""}}, "ix_task_id_name"),
        ({"name_prefix": "align", "state": State.COMPLETE}, "ix_task_state_id_name"),
        ({"name_prefix": "align", "owner": "o0"}, "ix_task_owner_id_name"),
        ({"name_prefix": "align", "owner": "o0", "state": State.COMPLETE}, "ix_task_owner_state_id_name"),
    ],
    ids=["prefix", "prefix and tag", "prefix and state", "prefix and owner", "prefix, owner and state"],
)
async def test_postgres_checks_a_name_prefix_on_the_index_a_page_walks(
    store: SqlAlchemyTaskStore, database_url: str, filters: dict[str, Any], walked: str
) -> None:
    """PostgreSQL's indexes that pages walk hold the name's first characters (migration 0011): the
    newest tasks, which a prefix does not match, are passed over on the index's entries, with no
    visit of their rows. The plan is read as the API's pool for pages makes it, for the statement
    it sends, with its values."""
    import asyncpg

    from poiesis.adapters.postgres.records import dsn
    from poiesis.adapters.sqlalchemy.direct import PAGE_SETTINGS, Statement

    conn = await asyncpg.connect(dsn(database_url), server_settings=PAGE_SETTINGS)
    try:  # 20,000 older tasks of five names and owners, then 10,000 newer ones of another name
        await conn.execute(
            "INSERT INTO task (id, owner, state, created_at, name, tags)"
            " SELECT lpad(g::text, 26, '0'), 'o' || g % 5, CASE WHEN g % 2 = 0 THEN 'COMPLETE'"
            " ELSE 'QUEUED' END::task_state, now(), CASE WHEN g <= 20000 THEN"
            " (ARRAY['align', 'call', 'qc', 'index', 'merge'])[g % 5 + 1] || '-' || g ELSE 'other' END,"
            ' \'{"bench": ""}\' FROM generate_series(1, 30000) AS g'
        )
        await conn.execute("ANALYZE task")
        query = TaskQuery(page_size=100, view=View.BASIC, **filters)
        page = Statement(store.documents_query(query))
        values = store._page_values(query)
        plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {page.sql}", *page.args(values)))
    finally:
        await conn.close()
    assert f"Index Scan Backward using {walked} on task" in plan, plan
    assert "Sort" not in plan, plan
    index_cond = next(line for line in plan.splitlines() if "Index Cond" in line)
    assert "left(name, 256))::text >= 'align'::text" in index_cond.replace('"', ""), plan
    found = await store.documents(query)
    assert len(found.documents) == 100
    assert all(msgspec.json.decode(d)["name"].startswith("align") for d in found.documents)


@pytest.mark.parametrize("kind", ["postgres"], indirect=True)
async def test_postgres_tasks_stored_before_migration_0011_are_found_by_name_and_tag_key(
    store: SqlAlchemyTaskStore, clock: FakeClock, engines: tuple[AsyncEngine, AsyncEngine]
) -> None:
    """Migration 0011 makes PostgreSQL's walked indexes and the tag keys' index again, both ways:
    the tasks stored before it are found by a name prefix and a bare tag key after it, and a
    downgrade gives back the indexes of 0010."""

    async def indexes() -> dict[str, str]:
        async with engines[0].connect() as conn:
            found = await conn.execute(
                sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'task'")
            )
            return {r.indexname: r.indexdef.split(" USING ")[1] for r in found}

    tasks = [
        make_task(clock, name=f"{'align' if i % 2 else 'call'}-{i}", tags={f"k{i % 3}": ""}) for i in range(6)
    ]
    async with engines[0].begin() as conn:
        await _downgrade(conn, "0010")
    before = await indexes()
    assert before["ix_task_state_id"] == "btree (state, id)"
    for task in tasks[:4]:  # stored by a store of revision 0010
        await store.create(task, owner="a", system_logs=[])
    await migrate(engines[0])
    after = await indexes()
    assert "ix_task_state_id" not in after
    assert after["ix_task_state_id_name"] == 'btree (state, id, "left"(name, 256) COLLATE "C")'
    for task in tasks[4:]:
        await store.create(task, owner="a", system_logs=[])

    async def found(**filters: Any) -> list[str]:
        return [t.id for t in (await store.list_tasks(TaskQuery(page_size=10, **filters))).tasks]

    assert await found(name_prefix="align") == [t.id for t in reversed(tasks[1::2])]
    assert await found(tags={"k1": ""}) == [tasks[4].id, tasks[1].id]
    assert await found(tags={"k1": ""}, name_prefix="call") == [tasks[4].id]
    async with engines[0].begin() as conn:
        await _downgrade(conn, "0010")
    assert await indexes() == before
    assert await found(tags={"k2": ""}) == [tasks[5].id, tasks[2].id]


@pytest.mark.parametrize("kind", ["sqlite"], indirect=True)
async def test_sqlite_tasks_stored_before_migration_0010_keep_their_tags(
    store: SqlAlchemyTaskStore, clock: FakeClock, engines: tuple[AsyncEngine, AsyncEngine]
) -> None:
    """Migration 0010 makes SQLite's tag table again (without rowid), both ways: the tags of the
    tasks stored before it still answer a page, and deleting a task still deletes its tags."""

    async def tag_table() -> str:
        async with engines[0].connect() as conn:
            found = await conn.execute(sa.text("SELECT sql FROM sqlite_master WHERE name = 'tag'"))
            return str(found.scalar())

    tasks = [make_task(clock, tags={"run": f"r{i % 2}", "bench": ""}) for i in range(6)]
    async with engines[0].begin() as conn:
        await _downgrade(conn, "0009")
    for task in tasks[:4]:  # stored by a store of revision 0009, into a table with a rowid
        await store.create(task, owner="a", system_logs=[])
    await migrate(engines[0])
    for task in tasks[4:]:
        await store.create(task, owner="a", system_logs=[])
    assert "WITHOUT ROWID" in await tag_table()
    page = await store.documents(TaskQuery(tags={"run": "r1", "bench": ""}, page_size=10, view=View.BASIC))
    assert [msgspec.json.decode(d)["id"] for d in page.documents] == [t.id for t in reversed(tasks[1::2])]
    async with engines[0].begin() as conn:
        await conn.execute(sa.text("DELETE FROM task WHERE id = :id"), {"id": tasks[1].id})
        left = (await conn.execute(sa.text("SELECT count(*) FROM tag"))).scalar()
    assert left == 2 * 5
    async with engines[0].begin() as conn:
        await _downgrade(conn, "0009")
    assert "WITHOUT ROWID" not in await tag_table()
    page = await store.list_tasks(TaskQuery(tags={"run": "r0"}, page_size=10))
    assert [t.id for t in page.tasks] == [t.id for t in reversed(tasks[0::2])]
