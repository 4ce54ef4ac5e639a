"""SqlAlchemyTaskStore: the TaskStore port on PostgreSQL and SQLite.

A task is written once, relationally, in one transaction (one statement on PostgreSQL); creates
that arrive together are committed together (`grouped`: one transaction, and on PostgreSQL one
round trip, for the group). A read picks
the page's task ids on `task` alone, then fetches their details in one prepared statement that
aggregates each child table as JSON, leaving out what the requested view does not show. State
changes lock the task row, check the domain's transition table and record the move in
`state_transition` in the same transaction.

On PostgreSQL the API's reads answer with documents (`document`, `documents`): the task's JSON in
the view asked for, rendered by the database (`postgres.documents`). On both databases the BASIC
one is kept in the task's row by every write transaction here (SQLite's rendered in Python), and
cleared by triggers on any other write. Given `direct`, a create, a GET, a page and a state are
each one statement through asyncpg (`direct`), and no read or single-statement write opens a
transaction. Given `threads` (SQLite), a read or a group of creates runs whole in a worker thread
(`threaded`): reads are written once, as functions of a synchronous connection, run there or on the
reader engine. A pooled connection a database restart broke is tried once more (`ConnectionLost`).

This module holds the transactions; `rows` maps tasks to rows and back, `translation` turns the
driver's errors into the port's (`postgres.errors` for what goes through asyncpg directly).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from poiesis.adapters.grouped import Grouped
from poiesis.adapters.sqlalchemy import schema as t
from poiesis.adapters.sqlalchemy.direct import DirectPostgres, Statement
from poiesis.adapters.sqlalchemy.rendered import REFRESH, document
from poiesis.adapters.sqlalchemy.rows import (
    CHILD_TABLES,
    CREATE_POSTGRES,
    CREATE_POSTGRES_GROUP,
    SLICE,
    TASK_JSON,
    basic_document_of,
    children,
    details,
    task_from_row,
    task_row,
    to_json,
)
from poiesis.adapters.sqlalchemy.threaded import ThreadedSqlite
from poiesis.adapters.sqlalchemy.translation import (
    ConnectionLost,
    Translated,
    once_more_if_lost,
    uninterrupted,
)
from poiesis.domain.errors import Conflict, KeyReused, TaskNotFound
from poiesis.domain.idempotency import Key
from poiesis.domain.listing import DocumentPage, TaskPage, TaskQuery
from poiesis.domain.states import TERMINAL, State
from poiesis.domain.tes import OutputFileLog, Task, View
from poiesis.domain.views import encoded, encoded_page
from poiesis.ports.store import (
    Applied,
    Change,
    ExecutorRan,
    Moved,
    OpenTask,
    OutputsRecorded,
    Transition,
    outcome,
    steps,
    writes_log,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

ATTEMPT = 0  # Poiesis does not retry tasks: one task log per task.
RARE_TAG = 1000
"""SQLite finds a page from a tag's rows when fewer tasks than this have it (`_rare_tag`)."""
GROUPED_CHILD_ROWS = 64
"""Concurrent creates of tasks of at most this many executors, inputs, outputs and tags are
committed together (`grouped`); a larger task is committed on its own."""


def _aware(value: datetime) -> datetime:
    """SQLite gives back naive times (stored in UTC)."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _drop_none(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


class _Create:
    """A task to create: its row and child rows; on PostgreSQL, the parameters of `CREATE_POSTGRES`
    (`params`) or its member of `CREATE_POSTGRES_GROUP`'s array (`member`), each made when sent."""

    __slots__ = ("child_rows", "conflict", "row")

    def __init__(
        self, row: dict[str, Any], child_rows: dict[str, list[dict[str, Any]]], conflict: str
    ) -> None:
        self.row = row
        self.child_rows = child_rows
        self.conflict = conflict

    def member(self) -> dict[str, Any]:
        return self.row | {name: rows for name, rows in self.child_rows.items() if name != "tag_rows"}

    def params(self) -> dict[str, Any]:
        row = self.row
        return (
            row
            | {k: to_json(row[k]) for k in TASK_JSON}
            | {name: to_json(rows) for name, rows in self.child_rows.items() if name != "tag_rows"}
        )


class _KeyTaken(Exception):
    """An idempotency key another create holds: its transaction is rolled back."""


class SqlAlchemyTaskStore:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        reader: AsyncEngine | None = None,
        direct: DirectPostgres | None = None,
        threads: ThreadedSqlite | None = None,
    ) -> None:
        """`direct`: PostgreSQL's hot statements (create, GET, a page, a state) sent through asyncpg;
        `threads`: SQLite's reads and creates each run whole in a worker thread."""
        self._postgres = engine.dialect.name == "postgresql"
        self._direct = direct if self._postgres else None
        self._threads = None if self._postgres else threads
        self._engine = Translated(engine)
        # PostgreSQL: a read is one statement and needs no transaction around it (BEGIN and
        # ROLLBACK would be two more round trips); nor does a create, one statement there.
        self._reader = Translated(reader or engine, autocommit=self._postgres)
        self._single = Translated(engine, autocommit=True) if self._postgres else self._engine
        # One group in flight per process: the creates that arrive meanwhile wait and go together
        # next, so a busier API sends larger groups (fewer statements, commits and round trips per
        # task). SQLite has one writer at a time anyway.
        self._creates: Grouped[_Create] = Grouped(self._create_one, self._create_many, lanes=1, name="create")
        self._pages: dict[tuple[Any, ...], Statement] = {}

    # --- writes -----------------------------------------------------------------------------

    @uninterrupted
    async def create(self, task: Task, *, owner: str, system_logs: list[str]) -> None:
        try:
            await self._create(task, owner=owner, system_logs=system_logs)
        except ConnectionLost:
            # The connection broke under the statement, before or after its commit: once more on a
            # fresh one. The task's id is the same, so a task the first try committed is a
            # Conflict now, never a second task.
            try:
                await self._create(task, owner=owner, system_logs=system_logs)
            except Conflict:
                log.info("task %s: committed before its connection was lost", task.id)

    @uninterrupted
    async def create_once(self, task: Task, *, owner: str, system_logs: list[str], key: Key) -> str:
        try:
            return await self._create_once(task, owner=owner, system_logs=system_logs, key=key)
        except ConnectionLost:
            # Once more on a fresh connection: if the first try committed, its key is taken by
            # this very task now, and its id comes back.
            return await self._create_once(task, owner=owner, system_logs=system_logs, key=key)

    async def _create_once(self, task: Task, *, owner: str, system_logs: list[str], key: Key) -> str:
        row = task_row(task, owner, document=not system_logs)
        create = _Create(row, children(task), f"task {task.id} already exists")
        keys = t.idempotency_key
        claim = (postgresql.insert(keys) if self._postgres else sqlite.insert(keys)).values(
            owner=owner, key=key.value, task_id=task.id, fingerprint=key.fingerprint
        )
        try:
            async with self._engine.begin(conflict=create.conflict) as conn:
                await self._insert_with_logs(conn, create, task.id, system_logs)
                # A concurrent create with the key waits here for the first one's commit (or
                # rollback); the loser claims nothing and its task is rolled back with it.
                claimed = await conn.execute(
                    claim.on_conflict_do_nothing(index_elements=["owner", "key"]).returning(keys.c.task_id)
                )
                if claimed.first() is None:
                    raise _KeyTaken
        except _KeyTaken:
            # From the writer: the key's row was committed an instant ago.
            async with self._engine.connect() as conn:
                first = (
                    await conn.execute(
                        sa.select(keys.c.task_id, keys.c.fingerprint).where(
                            keys.c.owner == owner, keys.c.key == key.value
                        )
                    )
                ).one()
            if first.fingerprint != key.fingerprint:
                raise KeyReused(first.task_id) from None
            return str(first.task_id)
        return task.id

    async def _create(self, task: Task, *, owner: str, system_logs: list[str]) -> None:
        row = task_row(task, owner, document=not system_logs)
        child_rows = children(task)
        create = _Create(row, child_rows, f"task {task.id} already exists")
        if not system_logs:
            if sum(map(len, child_rows.values())) <= GROUPED_CHILD_ROWS:
                await self._creates(create)
            else:  # a large task is its own group: it must not hold the small ones behind it
                await self._create_one(create)
            return
        async with self._engine.begin(conflict=create.conflict) as conn:
            await self._insert_with_logs(conn, create, task.id, system_logs)

    async def _insert_with_logs(
        self, conn: AsyncConnection, create: _Create, task_id: str, system_logs: list[str]
    ) -> None:
        """The task's rows and its first `system_logs` lines, in the caller's transaction (the
        kept document is rendered again after the lines)."""
        await conn.run_sync(self._insert, [create])
        if system_logs:
            await self._ensure_log(conn, task_id)
            await conn.execute(
                sa.insert(t.system_log),
                [{"task_id": task_id, "attempt": ATTEMPT, "line": line} for line in system_logs],
            )
            await self._refresh(conn, task_id)

    async def _create_one(self, create: _Create) -> None:
        if self._direct is not None:
            await self._direct.execute(_statement(CREATE_POSTGRES), create.params(), conflict=create.conflict)
            return
        await self._committed([create], create.conflict)

    async def _create_many(self, creates: Sequence[_Create]) -> None:
        """Tasks created together: one transaction, and on PostgreSQL one statement."""
        conflict = "a task of the group already exists"
        if self._direct is not None:
            params = {"tasks": msgspec.json.encode([c.member() for c in creates]).decode()}
            await self._direct.execute(_statement(CREATE_POSTGRES_GROUP), params, conflict=conflict)
            return
        await self._committed(creates, conflict)

    async def _committed(self, creates: Sequence[_Create], conflict: str) -> None:
        if self._threads is not None:
            await self._threads.write(lambda conn: self._insert(conn, creates), conflict=conflict)
            return
        async with (self._single if self._postgres else self._engine).begin(conflict=conflict) as conn:
            await conn.run_sync(self._insert, creates)

    def _insert(self, conn: sa.Connection, creates: Sequence[_Create]) -> None:
        if self._postgres:
            if len(creates) == 1:
                conn.execute(CREATE_POSTGRES, creates[0].params())
            else:
                params = {"tasks": msgspec.json.encode([c.member() for c in creates]).decode()}
                conn.execute(CREATE_POSTGRES_GROUP, params)
            return
        conn.execute(sa.insert(t.task), [c.row for c in creates])
        for name, table in CHILD_TABLES.items():
            rows = [
                {col.name: r.get(col.name) for col in table.c} | {"task_id": c.row["id"]}
                for c in creates
                for r in c.child_rows[name]
            ]
            # In slices: on the engine's bridge SQLAlchemy prepares each slice on the event loop,
            # and a task of thousands of inputs must not hold every other request up meanwhile.
            for start in range(0, len(rows), SLICE):
                conn.execute(sa.insert(table), rows[start : start + SLICE])

    @uninterrupted
    async def transition(
        self,
        task_id: str,
        target: State,
        *,
        now: datetime,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> bool:
        change = Moved(target=target, at=now, reason=reason, metadata=metadata)
        return bool((await self._apply(task_id, [change])).moved)

    @uninterrupted
    async def record_executor(
        self,
        task_id: str,
        index: int,
        *,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        exit_code: int | None = None,
        stdout: str | None = None,
        stderr: str | None = None,
    ) -> None:
        change = ExecutorRan(
            index=index,
            start_time=start_time,
            end_time=end_time,
            exit_code=exit_code,
            stdout=stdout,
            stderr=stderr,
        )
        await self._apply(task_id, [change])

    @uninterrupted
    async def add_output_files(self, task_id: str, files: list[OutputFileLog]) -> None:
        await self._apply(task_id, [OutputsRecorded(files=files)])

    @uninterrupted
    async def apply(self, task_id: str, changes: Sequence[Change]) -> Applied:
        return await self._apply(task_id, changes)

    async def _apply(self, task_id: str, changes: Sequence[Change]) -> Applied:
        async with self._engine.begin() as conn:
            state = await self._locked_state(conn, task_id)  # serialises this task's writers
            made = steps(state, changes)
            if any(writes_log(step.change) for step in made):
                await self._ensure_log(conn, task_id)
            for step in made:
                match step.change:
                    case Moved() as move:
                        await self._move(conn, task_id, step.state, move)
                    case ExecutorRan() as ran:
                        await self._executor(conn, task_id, ran)
                    case OutputsRecorded(files=files):
                        await self._outputs(conn, task_id, files)
            if made:
                await self._refresh(conn, task_id)
        return outcome(state, made)

    async def _move(self, conn: AsyncConnection, task_id: str, current: State, change: Moved) -> None:
        target, at = change.target, change.at
        await conn.execute(sa.update(t.task).where(t.task.c.id == task_id).values(state=target))
        await conn.execute(
            sa.insert(t.state_transition),
            [{"task_id": task_id, "source": current, "target": target, "at": at}],
        )
        if target in (State.INITIALIZING, State.RUNNING):
            await conn.execute(
                sa.update(t.task_log)
                .where(t.task_log.c.task_id == task_id, t.task_log.c.start_time.is_(None))
                .values(start_time=at)
            )
        elif target in TERMINAL:
            await conn.execute(
                sa.update(t.task_log)
                .where(t.task_log.c.task_id == task_id, t.task_log.c.end_time.is_(None))
                .values(end_time=at)
            )
        if change.reason is not None:
            await conn.execute(
                sa.insert(t.system_log),
                [{"task_id": task_id, "attempt": ATTEMPT, "line": change.reason}],
            )
        if change.metadata:
            await self._merge_metadata(conn, task_id, change.metadata)

    async def _executor(self, conn: AsyncConnection, task_id: str, change: ExecutorRan) -> None:
        values = _drop_none(
            start_time=change.start_time,
            end_time=change.end_time,
            exit_code=change.exit_code,
            stdout=change.stdout,
            stderr=change.stderr,
        )
        key = {"task_id": task_id, "attempt": ATTEMPT, "idx": change.index}
        where = [t.executor_log.c[k] == v for k, v in key.items()]
        found = (await conn.execute(sa.select(t.executor_log.c.idx).where(*where))).first()
        if found is None:
            await conn.execute(sa.insert(t.executor_log), [key | values])
        elif values:
            await conn.execute(sa.update(t.executor_log).where(*where).values(**values))

    async def _outputs(self, conn: AsyncConnection, task_id: str, files: list[OutputFileLog]) -> None:
        recorded = set(
            (
                await conn.execute(
                    sa.select(t.output_file_log.c.url).where(
                        t.output_file_log.c.task_id == task_id, t.output_file_log.c.attempt == ATTEMPT
                    )
                )
            ).scalars()
        )
        fresh = {f.url: f for f in files if f.url not in recorded}
        if fresh:
            await conn.execute(
                sa.insert(t.output_file_log),
                [
                    {
                        "task_id": task_id,
                        "attempt": ATTEMPT,
                        "url": f.url,
                        "path": f.path,
                        "size_bytes": int(f.size_bytes),
                    }
                    for f in fresh.values()
                ],
            )

    @uninterrupted
    async def append_system_log(self, task_id: str, line: str) -> None:
        async with self._engine.begin() as conn:
            await self._locked_state(conn, task_id)
            await self._ensure_log(conn, task_id)
            await conn.execute(
                sa.insert(t.system_log),
                [{"task_id": task_id, "attempt": ATTEMPT, "line": line}],
            )
            await self._refresh(conn, task_id)

    @uninterrupted
    async def set_metadata(self, task_id: str, metadata: dict[str, str]) -> None:
        async with self._engine.begin() as conn:
            await self._locked_state(conn, task_id)
            await self._merge_metadata(conn, task_id, metadata)
            await self._refresh(conn, task_id)

    async def _refresh(self, conn: AsyncConnection, task_id: str) -> None:
        """Render the task's kept BASIC document again, last in a transaction that changed it."""
        if self._postgres:
            await conn.execute(REFRESH, {"task_id": task_id})
            return
        rows = (await conn.execute(details(View.BASIC), {"ids": [task_id]})).all()
        if rows:
            text = basic_document_of(rows[0]).decode()
            await conn.execute(sa.update(t.task).where(t.task.c.id == task_id).values(basic_document=text))

    async def _merge_metadata(self, conn: AsyncConnection, task_id: str, metadata: dict[str, str]) -> None:
        await self._ensure_log(conn, task_id)
        row = (
            await conn.execute(
                sa.select(t.task_log.c.metadata).where(
                    t.task_log.c.task_id == task_id, t.task_log.c.attempt == ATTEMPT
                )
            )
        ).one()
        await conn.execute(
            sa.update(t.task_log)
            .where(t.task_log.c.task_id == task_id, t.task_log.c.attempt == ATTEMPT)
            .values(metadata=dict(row.metadata or {}) | metadata)
        )

    # --- reads ------------------------------------------------------------------------------

    @once_more_if_lost
    async def state(self, task_id: str, *, owner: str | None = None) -> State:
        query = _state_of(owner is not None)
        params = {"id": task_id, "owner": owner}
        if self._direct is not None:
            value = await self._direct.value(_statement(query), params)
        else:
            value = await self._read(lambda conn: conn.execute(query, params).scalar_one_or_none())
        if value is None:
            raise TaskNotFound(task_id)
        return State(value)

    @once_more_if_lost
    async def get(self, task_id: str, *, view: View = View.FULL, owner: str | None = None) -> Task:
        rows = await self._read(lambda conn: conn.execute(details(view), {"ids": [task_id]}).all())
        if not rows or (owner is not None and rows[0].owner != owner):
            raise TaskNotFound(task_id)
        return task_from_row(rows[0], view)

    @once_more_if_lost
    async def document(self, task_id: str, *, view: View, owner: str | None = None) -> bytes:
        if not self._postgres:
            if view is View.BASIC:
                row = await self._read(lambda conn: conn.execute(_KEPT, {"id": task_id}).one_or_none())
                if row is None or (owner is not None and row.owner != owner):
                    raise TaskNotFound(task_id)
                if row.basic_document is not None:
                    return str(row.basic_document).encode()
            return encoded(await self.get(task_id, view=view, owner=owner), view)
        query, params = _document_of(view, owner is not None), {"id": task_id, "owner": owner}
        if self._direct is not None:
            text = await self._direct.value(_statement(query), params)
        else:
            text = await self._read(lambda conn: conn.execute(query, params).scalar_one_or_none())
        if text is None:
            raise TaskNotFound(task_id)
        return str(text).encode()

    @once_more_if_lost
    async def documents(self, query: TaskQuery) -> DocumentPage:
        if not self._postgres:
            if query.view is View.BASIC:
                return await self._read(lambda conn: self._kept_documents(conn, query))
            return encoded_page(await self.list_tasks(query), query.view)
        if self._direct is not None:
            values = self._page_values(query)
            page = self._compiled_page((query.view, *values), lambda: Statement(self.documents_query(query)))
            rows: Sequence[Any] = await self._direct.rows(page.sql, page.args(values))
        else:
            statement = self.documents_query(query)
            rows = await self._read(lambda conn: conn.execute(statement).mappings().all())
        more = len(rows) > query.page_size
        rows = rows[: query.page_size]
        return DocumentPage(
            documents=[str(r["document"]).encode() for r in rows],
            next_after=rows[-1]["id"] if more and rows else None,
        )

    def _kept_documents(self, conn: sa.Connection, query: TaskQuery) -> DocumentPage:
        """SQLite's BASIC page: the documents its writers keep, those cleared rendered here. The
        page's statement is compiled once per shape of filters and sent as text, as PostgreSQL's
        (building and compiling it again cost more than SQLite's own work for a small page)."""
        rare = self._rare_tag(conn, query.tags)
        values = self._page_values(query, rare)
        page = self._compiled_page(
            ("kept", *values, rare is not None),
            lambda: Statement(self._page(query, t.task.c.id, t.task.c.basic_document, rare=rare), _SQLITE),
        )
        rows = conn.exec_driver_sql(page.sql, tuple(page.args(values))).all()
        more = len(rows) > query.page_size
        rows = rows[: query.page_size]
        cleared = [r.id for r in rows if r.basic_document is None]
        rendered = {}
        if cleared:
            found = conn.execute(details(View.BASIC), {"ids": cleared}).all()
            rendered = {r.id: basic_document_of(r) for r in found}
        return DocumentPage(
            documents=[
                rendered[r.id] if r.basic_document is None else str(r.basic_document).encode() for r in rows
            ],
            next_after=rows[-1].id if more and rows else None,
        )

    def _compiled_page(self, shape: tuple[Any, ...], compile: Callable[[], Statement]) -> Statement:
        """The page statement of `shape` (the view, the names of its parameters and what else
        decides its text), compiled once; at most PAGE_SHAPES are kept, past that a page of a new
        shape compiles its own."""
        page = self._pages.get(shape)
        if page is None:
            page = compile()
            if len(self._pages) < PAGE_SHAPES:
                self._pages[shape] = page
        return page

    def documents_query(self, query: TaskQuery) -> sa.Select[Any]:
        """The ids and documents of the page `query` asks for, in one statement (PostgreSQL): the
        page is chosen on `task` alone, and only its rows' documents are read or rendered."""
        return self._page(query, t.task.c.id, document(query.view))

    def page_query(self, query: TaskQuery) -> sa.Select[Any]:
        """The ids and states of the page `query` asks for: chosen on `task` alone, where its indexes
        decide the plan."""
        return self._page(query, t.task.c.id, t.task.c.state)

    def _page(
        self, query: TaskQuery, *columns: sa.ColumnElement[Any], rare: str | None = None
    ) -> sa.Select[Any]:
        """`columns` of the page's tasks, newest first, one more than the page holds (is there more).
        `rare`: the key of a tag few tasks have (SQLite's `_rare_tag`), from which the page is found."""
        values = self._page_values(query, rare)
        # PostgreSQL's walked indexes end with (id, name_key): ordered so, a page walks one of them,
        # where a prefix is tested on the entries, and not the primary key, whose rows it would
        # visit, a choice its planner costs as nearly even (id is unique: the order is the same).
        order = (t.task.c.id.desc(), t.name_key.desc()) if self._postgres else (t.task.c.id.desc(),)
        page = (
            sa.select(*columns)
            .where(*self._filters(query, values, rare))
            .order_by(*order)
            .limit(sa.bindparam("limit", values["limit"], sa.Integer))
        )
        # SQLite's LIMIT always comes with an OFFSET: written as text, not as one more parameter.
        return page if self._postgres else page.offset(sa.literal_column("0"))

    def _page_values(self, query: TaskQuery, rare: str | None = None) -> dict[str, Any]:
        """The values of a page's parameters, by name. Queries with the same names (and view, and
        on SQLite a rare tag or none) have the same statement: it is built and compiled once
        (`_pages`), as a GET's is. SQLite's tags are named in the order `_sqlite_tags` gives."""
        values: dict[str, Any] = {}
        if query.owner is not None:
            values["owner"] = query.owner
        if query.state is not None:
            values["state"] = query.state
        if query.name_prefix:
            prefix = query.name_prefix
            if self._postgres:
                # Tested on the indexed part of the name, and on the whole name past it.
                values["name_like"] = _like_prefix(prefix[: t.NAME_KEY_CHARS])
                if len(prefix) > t.NAME_KEY_CHARS:
                    values["name_like_whole"] = _like_prefix(prefix)
            else:  # the statement adds the wildcard (`_filters`)
                values["name_start"] = _escaped(prefix)
        if not self._postgres:
            for i, (key, value) in enumerate(_sqlite_tags(query.tags, rare)):
                values[f"tag_key_{i}"] = key
                if value:
                    values[f"tag_value_{i}"] = value
        else:
            valued = {k: v for k, v in query.tags.items() if v}
            if valued:
                values["tag_values"] = to_json(valued)
            keys = [k for k, v in query.tags.items() if not v]
            if keys:
                # As the keys' index holds them (migration 0011), and whole when one is longer.
                values["tag_keys"] = [k[: t.NAME_KEY_CHARS] for k in keys]
                if any(len(k) > t.NAME_KEY_CHARS for k in keys):
                    values["tag_keys_whole"] = keys
        if query.after is not None:
            values["after"] = query.after
        values["limit"] = query.page_size + 1
        return values

    def _filters(
        self, query: TaskQuery, values: dict[str, Any], rare: str | None = None
    ) -> list[sa.ColumnElement[bool]]:
        c = t.task.c
        where: list[sa.ColumnElement[bool]] = []
        if "owner" in values:
            where.append(c.owner == sa.bindparam("owner", values["owner"]))
        if "state" in values:
            where.append(c.state == sa.bindparam("state", values["state"]))
        if "name_like" in values:
            # On the expression PostgreSQL's walked indexes hold, tested on their entries.
            where.append(t.name_key.like(sa.bindparam("name_like", values["name_like"]), escape="/"))
            if "name_like_whole" in values:
                whole_name = sa.bindparam("name_like_whole", values["name_like_whole"], sa.Text)
                where.append(c.name.like(whole_name, escape="/"))
        elif "name_start" in values:
            # The prefix and the wildcard joined in the statement: SQLite's planner given a pattern
            # ranges over the name's index and sorts every match (19 ms for a prefix of 20% of
            # 20,000 tasks, against 13 ms walking the newest).
            start = sa.bindparam("name_start", values["name_start"], sa.Text)
            where.append(c.name.like(start.concat(sa.literal_column("'%'")), escape="/"))
        if self._postgres:
            # One containment test for the keys with values, one for the bare keys: each answered
            # by a GIN index (migration 0005), or checked on the rows of another index.
            if "tag_values" in values:
                tags = sa.cast(sa.bindparam("tag_values", values["tag_values"], sa.Text), postgresql.JSONB)
                where.append(c.tags.op("@>")(tags))
            if "tag_keys" in values:
                keys = sa.bindparam("tag_keys", values["tag_keys"], postgresql.ARRAY(sa.Text))
                where.append(sa.func.task_tag_keys(c.tags).op("@>")(keys))
            if "tag_keys_whole" in values:
                whole = sa.bindparam("tag_keys_whole", values["tag_keys_whole"], postgresql.ARRAY(sa.Text))
                where.append(c.tags.op("?&")(whole))
        elif query.tags:
            where.extend(self._sqlite_tag_filters(values, rare is not None))
        if "after" in values:
            where.append(c.id < sa.bindparam("after", values["after"]))
        return where

    @once_more_if_lost
    async def list_tasks(self, query: TaskQuery) -> TaskPage:
        more, rows = await self._read(lambda conn: self._task_rows(conn, query))
        tasks = [task_from_row(r, query.view) for r in rows]
        return TaskPage(tasks=tasks, next_after=tasks[-1].id if more and tasks else None)

    def _task_rows(self, conn: sa.Connection, query: TaskQuery) -> tuple[bool, Sequence[Any]]:
        """Whether there is more after the page, and its rows (one snapshot: one transaction)."""
        rare = None if self._postgres else self._rare_tag(conn, query.tags)
        rows = conn.execute(self._page(query, t.task.c.id, t.task.c.state, rare=rare)).all()
        more = len(rows) > query.page_size
        rows = rows[: query.page_size]
        if query.view is not View.MINIMAL and rows:
            rows = conn.execute(details(query.view), {"ids": [r.id for r in rows]}).all()
        return more, rows

    @once_more_if_lost
    async def history(self, task_id: str) -> list[Transition]:
        st = t.state_transition
        query = sa.select(st.c.source, st.c.target, st.c.at).where(st.c.task_id == task_id).order_by(st.c.id)
        rows = await self._read(lambda conn: conn.execute(query).all())
        return [Transition(source=State(r.source), target=State(r.target), at=_aware(r.at)) for r in rows]

    @once_more_if_lost
    async def ids_in_states(self, states: Collection[State]) -> list[str]:
        query = sa.select(t.task.c.id).where(t.task.c.state.in_(list(states))).order_by(t.task.c.id)
        return await self._read(lambda conn: list(conn.execute(query).scalars()))

    @once_more_if_lost
    async def open_tasks(self) -> list[OpenTask]:
        task = t.task
        query = (
            sa.select(task.c.id, task.c.owner, task.c.state)
            .where(task.c.state.not_in([s.value for s in TERMINAL]))
            .order_by(task.c.id)
        )
        rows = await self._read(lambda conn: conn.execute(query).all())
        return [OpenTask(r.id, r.owner, State(r.state)) for r in rows]

    @once_more_if_lost
    async def count_by_state(self, *, owner: str | None = None) -> dict[State, int]:
        counts = t.task_state_count
        if owner is None:
            query = sa.select(counts.c.state, sa.func.sum(counts.c.n).label("n")).group_by(counts.c.state)
        else:
            # Answered from the index by (owner, state, id, ...).
            query = (
                sa.select(t.task.c.state, sa.func.count().label("n"))
                .where(t.task.c.owner == owner)
                .group_by(t.task.c.state)
            )
        rows = await self._read(lambda conn: conn.execute(query).all())
        return {State(r.state): int(r.n) for r in rows if r.n}

    @once_more_if_lost
    async def ping(self) -> None:
        if self._direct is not None:
            await self._direct.value(_statement(_PING), {})
            return
        await self._read(lambda conn: conn.execute(_PING).all())

    # --- internals ----------------------------------------------------------------------------

    async def _read(self, work: Callable[[sa.Connection], T]) -> T:
        """A read, written as a function of a synchronous connection: run whole in a worker thread
        (SQLite, given `threads`), or else on the reader engine through its greenlet bridge."""
        if self._threads is not None:
            return await self._threads.read(work)
        async with self._reader.connect() as conn:
            return await conn.run_sync(work)

    def _rare_tag(self, conn: sa.Connection, tags: dict[str, str]) -> str | None:
        """SQLite: the key of the tag with a value that the fewest tasks have, if fewer than
        RARE_TAG do.

        SQLite's planner knows how many tasks share a tag only on average, so it either walks
        every task checking each for the tag (186 ms at 100,000 tasks for a tag on one task) or
        starts from the tag's rows (10,000 of them for a tag on 10%, then sorted: slower than the
        walk). Counting a tag's rows up to RARE_TAG first costs a few index entries and tells."""
        valued = [(key, value) for key, value in tags.items() if value]
        if not valued:
            return None
        counts = _tag_counts(len(valued), RARE_TAG)  # one statement for every tag
        named: dict[str, str] = {}
        for i, (key, value) in enumerate(valued):
            named |= {f"key_{i}": key, f"value_{i}": value}
        found = conn.exec_driver_sql(counts.sql, tuple(counts.args(named))).one()
        count, (key, _) = min(zip(found, valued, strict=True))
        return key if count < RARE_TAG else None

    def _sqlite_tag_filters(self, values: dict[str, Any], rare: bool) -> list[sa.ColumnElement[bool]]:
        """A test per tag of `values` (named as `_page_values` names them); `rare`: the first is a
        tag few tasks have, whose rows the page is found from."""
        filters: list[sa.ColumnElement[bool]] = []
        i = 0
        while f"tag_key_{i}" in values:
            cond = t.tag.c.key == sa.bindparam(f"tag_key_{i}", values[f"tag_key_{i}"])
            if f"tag_value_{i}" in values:
                cond &= t.tag.c.value == sa.bindparam(f"tag_value_{i}", values[f"tag_value_{i}"])
            if i == 0 and rare:
                filters.append(t.task.c.id.in_(sa.select(t.tag.c.task_id).where(cond)))
            else:
                filters.append(sa.exists().where((t.tag.c.task_id == t.task.c.id) & cond))
            i += 1
        return filters

    async def _locked_state(self, conn: AsyncConnection, task_id: str) -> State:
        query = sa.select(t.task.c.state).where(t.task.c.id == task_id)
        if self._postgres:
            query = query.with_for_update()
        value = (await conn.execute(query)).scalar_one_or_none()
        if value is None:
            raise TaskNotFound(task_id)
        return State(value)

    async def _ensure_log(self, conn: AsyncConnection, task_id: str) -> None:
        exists = await conn.execute(
            sa.select(t.task_log.c.attempt).where(
                t.task_log.c.task_id == task_id, t.task_log.c.attempt == ATTEMPT
            )
        )
        if exists.first() is None:
            # Callers hold the task's row lock, so no other writer can insert it meanwhile.
            await conn.execute(sa.insert(t.task_log), [{"task_id": task_id, "attempt": ATTEMPT}])


_PING: sa.Select[Any] = sa.select(sa.literal_column("1"))
_SQLITE = sqlite.dialect()
PAGE_SHAPES = 512
"""The most page statements a store keeps compiled (one per shape of filters seen); past this, a
page of a new shape builds its own."""


def _escaped(prefix: str) -> str:
    """`prefix` as plain characters in a LIKE pattern whose escape is '/'."""
    return prefix.replace("/", "//").replace("%", "/%").replace("_", "/_")


def _like_prefix(prefix: str) -> str:
    return _escaped(prefix) + "%"


def _sqlite_tags(tags: dict[str, str], rare: str | None) -> list[tuple[str, str]]:
    """SQLite's tag filters in the order its page's statement names them: the rare tag first, then
    those with a value, then the bare keys (so pages with as many of each share a statement)."""
    return sorted(tags.items(), key=lambda tag: (tag[0] != rare, not tag[1]))


@functools.cache
def _tag_counts(n: int, most: int) -> Statement:
    """SQLite: how many tasks have each of `n` tags with a value, counted up to `most`; its
    parameters are each tag's key and value in turn."""
    counts = [
        sa.select(sa.func.count())
        .select_from(
            sa.select(t.tag.c.task_id)
            .where(t.tag.c.key == sa.bindparam(f"key_{i}"), t.tag.c.value == sa.bindparam(f"value_{i}"))
            .limit(sa.literal_column(str(int(most))))
            .offset(sa.literal_column("0"))
            .subquery()
        )
        .scalar_subquery()
        for i in range(n)
    ]
    return Statement(sa.select(*counts), _SQLITE)


@functools.cache
def _statement(statement: sa.Executable) -> Statement:
    return Statement(statement)


def _by_id(scoped: bool) -> sa.ColumnElement[bool]:
    """The task bound to `id`, and to `owner` when `scoped`."""
    where = t.task.c.id == sa.bindparam("id")
    return where & (t.task.c.owner == sa.bindparam("owner")) if scoped else where


# SQLite: a task's owner and its kept BASIC document, by `id`.
_KEPT: sa.Select[Any] = sa.select(t.task.c.owner, t.task.c.basic_document).where(_by_id(False))


@functools.cache
def _state_of(scoped: bool) -> sa.Select[Any]:
    return sa.select(t.task.c.state).where(_by_id(scoped))


@functools.cache
def _document_of(view: View, scoped: bool) -> sa.Select[Any]:
    """One task's document, by `id` (and `owner` when `scoped`); built once per view."""
    return sa.select(document(view)).select_from(t.task).where(_by_id(scoped))
