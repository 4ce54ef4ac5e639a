"""SqlAlchemyTaskStore: the TaskStore port on PostgreSQL and SQLite.

A task is written once, relationally, in one transaction (one statement on PostgreSQL). A read picks
the page's task ids on `task` alone, then fetches their details in one prepared statement that
aggregates each child table as JSON, leaving out what the requested view does not show. State
changes lock the task row, check the domain's transition table and record the move in
`state_transition` in the same transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from poiesis.adapters.sqlalchemy import schema as t
from poiesis.adapters.sqlalchemy.documents import (
    ExecutorLogRow,
    LogRow,
    OutputFileRow,
    SystemLogRow,
    decode_rows,
    json_rows,
)
from poiesis.domain.errors import Conflict, TaskNotFound
from poiesis.domain.listing import TaskPage, TaskQuery
from poiesis.domain.states import TERMINAL, State, can_transition
from poiesis.domain.tes import (
    Executor,
    ExecutorLog,
    Input,
    Output,
    OutputFileLog,
    Resources,
    Task,
    TaskLog,
    View,
)
from poiesis.domain.times import parse_time, rfc3339
from poiesis.ports.store import (
    Applied,
    Change,
    ExecutorRan,
    Moved,
    OutputsRecorded,
    StoreUnavailable,
    Transition,
)

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

ATTEMPT = 0  # Poiesis does not retry tasks: one task log per task.


def _drop_none(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


_UNAVAILABLE = (OperationalError, InterfaceError, sa.exc.TimeoutError)
# SQLSTATE classes that mean "not now, try again": 08 connection exception, 53 insufficient resources
# (too many connections), 57 operator intervention (shutting down, starting up, terminated by an
# administrator). asyncpg's errors for these reach SQLAlchemy as a plain DBAPIError.
_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57")


def _is_unavailable(exc: sa.exc.SQLAlchemyError) -> bool:
    """Whether `exc` says the database cannot be reached or cannot serve now (retry later), as
    opposed to a fault in the request."""
    if isinstance(exc, _UNAVAILABLE):
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return isinstance(sqlstate, str) and sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES
    return False


class _Translated:
    """An engine whose connections turn "the database is unreachable" into StoreUnavailable: the one
    place where the driver's errors become the port's."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect

    def connect(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        return self._translated(self.engine.connect)

    def begin(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        return self._translated(self.engine.begin)

    @staticmethod
    @contextlib.asynccontextmanager
    async def _translated(
        open_: Callable[[], contextlib.AbstractAsyncContextManager[AsyncConnection]],
    ) -> AsyncIterator[AsyncConnection]:
        try:
            async with open_() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            if _is_unavailable(exc):
                raise StoreUnavailable(_reason(exc)) from exc
            raise
        except OSError as exc:  # ConnectionRefusedError and kin, before the driver wraps them
            raise StoreUnavailable(_reason(exc)) from exc


def _uninterrupted(method: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Run a write to its end even if the caller is cancelled meanwhile, then let the cancellation
    through. A write cut off inside its transaction can leave the connection holding SQLite's write
    lock (or a row lock) until it is garbage-collected, and every other writer waits for it."""

    @functools.wraps(method)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        write = asyncio.ensure_future(method(*args, **kwargs))
        try:
            return await asyncio.shield(write)
        except asyncio.CancelledError:
            await asyncio.wait({write})
            if not write.cancelled() and write.exception() is not None:
                log.warning("a write interrupted by a cancel failed: %s", write.exception())
            raise

    return run


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return f"database unavailable: {type(orig).__name__}: {str(orig).splitlines()[0] if str(orig) else ''}"


class SqlAlchemyTaskStore:
    def __init__(self, engine: AsyncEngine, *, reader: AsyncEngine | None = None) -> None:
        self._engine = _Translated(engine)
        self._reader = _Translated(reader or engine)
        self._postgres = engine.dialect.name == "postgresql"

    # --- writes -----------------------------------------------------------------------------

    @_uninterrupted
    async def create(self, task: Task, *, owner: str, system_logs: list[str]) -> None:
        row: dict[str, Any] = {
            "id": task.id,
            "owner": owner,
            "state": task.state,
            "created_at": parse_time(task.creation_time),
            "name": task.name,
            "description": task.description,
            "volumes": task.volumes,
            "tags": task.tags or {},
        }
        row |= msgspec.structs.asdict(task.resources or Resources())  # one column per field
        children = _children(task)
        try:
            async with self._engine.begin() as conn:
                if self._postgres:
                    params = (
                        row
                        | {k: _json(row[k]) for k in _TASK_JSON}
                        | {name: _json(rows) for name, rows in children.items()}
                    )
                    await conn.execute(_CREATE_POSTGRES, params)
                else:
                    await conn.execute(sa.insert(t.task), [row])
                    for name, rows in children.items():
                        table = _CHILD_TABLES[name]
                        # In slices: SQLAlchemy prepares each slice on the event loop, and a task of
                        # thousands of inputs must not hold every other request up meanwhile.
                        for start in range(0, len(rows), _SLICE):
                            await conn.execute(
                                sa.insert(table),
                                [
                                    {c.name: r.get(c.name) for c in table.c} | {"task_id": task.id}
                                    for r in rows[start : start + _SLICE]
                                ],
                            )
                if system_logs:
                    await self._ensure_log(conn, task.id)
                    await conn.execute(
                        sa.insert(t.system_log),
                        [{"task_id": task.id, "attempt": ATTEMPT, "line": line} for line in system_logs],
                    )
        except IntegrityError as exc:
            raise Conflict(f"task {task.id} already exists") from exc

    @_uninterrupted
    async def transition(
        self,
        task_id: str,
        target: State,
        *,
        now: str,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> bool:
        change = Moved(target=target, at=now, reason=reason, metadata=metadata)
        return bool((await self._apply(task_id, [change])).moved)

    @_uninterrupted
    async def record_executor(
        self,
        task_id: str,
        index: int,
        *,
        start_time: str | None = None,
        end_time: str | None = None,
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

    @_uninterrupted
    async def add_output_files(self, task_id: str, files: list[OutputFileLog]) -> None:
        await self._apply(task_id, [OutputsRecorded(files=files)])

    @_uninterrupted
    async def apply(self, task_id: str, changes: Sequence[Change]) -> Applied:
        return await self._apply(task_id, changes)

    async def _apply(self, task_id: str, changes: Sequence[Change]) -> Applied:
        moved: list[State] = []
        async with self._engine.begin() as conn:
            state = await self._locked_state(conn, task_id)  # serialises this task's writers
            logged = False
            for change in changes:
                if isinstance(change, Moved) and not can_transition(state, change.target):
                    continue
                if not logged and _needs_log(change):
                    await self._ensure_log(conn, task_id)
                    logged = True
                match change:
                    case Moved():
                        await self._move(conn, task_id, state, change)
                        state = change.target
                        moved.append(state)
                    case ExecutorRan():
                        await self._executor(conn, task_id, change)
                    case OutputsRecorded():
                        await self._outputs(conn, task_id, change.files)
        return Applied(state=state, moved=tuple(moved))

    async def _move(self, conn: AsyncConnection, task_id: str, current: State, change: Moved) -> None:
        target, at = change.target, parse_time(change.at)
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
            start_time=parse_time(change.start_time) if change.start_time else None,
            end_time=parse_time(change.end_time) if change.end_time else None,
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

    @_uninterrupted
    async def append_system_log(self, task_id: str, line: str) -> None:
        async with self._engine.begin() as conn:
            await self._locked_state(conn, task_id)
            await self._ensure_log(conn, task_id)
            await conn.execute(
                sa.insert(t.system_log),
                [{"task_id": task_id, "attempt": ATTEMPT, "line": line}],
            )

    @_uninterrupted
    async def set_metadata(self, task_id: str, metadata: dict[str, str]) -> None:
        async with self._engine.begin() as conn:
            await self._locked_state(conn, task_id)
            await self._merge_metadata(conn, task_id, metadata)

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

    async def state(self, task_id: str, *, owner: str | None = None) -> State:
        query = sa.select(t.task.c.state).where(t.task.c.id == task_id)
        if owner is not None:
            query = query.where(t.task.c.owner == owner)
        async with self._reader.connect() as conn:
            value = (await conn.execute(query)).scalar_one_or_none()
        if value is None:
            raise TaskNotFound(task_id)
        return State(value)

    async def get(self, task_id: str, *, view: View = View.FULL, owner: str | None = None) -> Task:
        async with self._reader.connect() as conn:
            rows = (await conn.execute(_details(view), {"ids": [task_id]})).all()
        if not rows or (owner is not None and rows[0].owner != owner):
            raise TaskNotFound(task_id)
        return _task(rows[0], view)

    def page_query(self, query: TaskQuery) -> sa.Select[Any]:
        """The ids and states of the page `query` asks for: chosen on `task` alone, where its indexes
        decide the plan."""
        c = t.task.c
        where: list[sa.ColumnElement[bool]] = []
        if query.owner is not None:
            where.append(c.owner == query.owner)
        if query.state is not None:
            where.append(c.state == query.state)
        if query.name_prefix:
            where.append(c.name.startswith(query.name_prefix, autoescape=True))
        if query.tags:
            where.extend(self._tag_filters(query.tags))
        if query.after is not None:
            where.append(c.id < query.after)
        return sa.select(c.id, c.state).where(*where).order_by(c.id.desc()).limit(query.page_size + 1)

    async def list_tasks(self, query: TaskQuery) -> TaskPage:
        page = self.page_query(query)
        async with self._reader.connect() as conn:
            rows = (await conn.execute(page)).all()
            more = len(rows) > query.page_size
            rows = rows[: query.page_size]
            if query.view is not View.MINIMAL and rows:
                rows = (await conn.execute(_details(query.view), {"ids": [r.id for r in rows]})).all()
        tasks = [_task(r, query.view) for r in rows]
        return TaskPage(tasks=tasks, next_after=tasks[-1].id if more and tasks else None)

    async def history(self, task_id: str) -> list[Transition]:
        st = t.state_transition
        async with self._reader.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(st.c.source, st.c.target, st.c.at)
                    .where(st.c.task_id == task_id)
                    .order_by(st.c.id)
                )
            ).all()
        return [Transition(source=State(r.source), target=State(r.target), at=rfc3339(r.at)) for r in rows]

    async def ids_in_states(self, states: Collection[State]) -> list[str]:
        async with self._reader.connect() as conn:
            rows = await conn.execute(
                sa.select(t.task.c.id).where(t.task.c.state.in_(list(states))).order_by(t.task.c.id)
            )
            return [r.id for r in rows]

    async def count_by_state(self, *, owner: str | None = None) -> dict[State, int]:
        counts = t.task_state_count
        if owner is None:
            query = sa.select(counts.c.state, sa.func.sum(counts.c.n).label("n")).group_by(counts.c.state)
        else:
            # Answered from the (owner, state, id) index.
            query = (
                sa.select(t.task.c.state, sa.func.count().label("n"))
                .where(t.task.c.owner == owner)
                .group_by(t.task.c.state)
            )
        async with self._reader.connect() as conn:
            rows = await conn.execute(query)
            return {State(r.state): int(r.n) for r in rows if r.n}

    async def ping(self) -> None:
        async with self._reader.connect() as conn:
            await conn.execute(sa.select(sa.literal(1)))

    # --- internals ----------------------------------------------------------------------------

    def _tag_filters(self, tags: dict[str, str]) -> list[sa.ColumnElement[bool]]:
        if self._postgres:
            # One containment test for the keys with values, one existence test per bare key: both
            # are answered by the GIN index on task.tags, or checked on the rows of another index.
            valued = {k: v for k, v in tags.items() if v}
            out: list[sa.ColumnElement[bool]] = []
            if valued:
                out.append(
                    t.task.c.tags.op("@>")(sa.cast(sa.literal(_json(valued), sa.Text), postgresql.JSONB))
                )
            out.extend(t.task.c.tags.op("?")(k) for k, v in tags.items() if not v)
            return out
        filters: list[sa.ColumnElement[bool]] = []
        for key, value in tags.items():
            cond = (t.tag.c.task_id == t.task.c.id) & (t.tag.c.key == key)
            if value:
                cond &= t.tag.c.value == value
            filters.append(sa.exists().where(cond))
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


def _needs_log(change: Change) -> bool:
    """Whether a change writes to the task log (a move to CANCELING or PAUSED alone does not)."""
    if not isinstance(change, Moved):
        return True
    logged_states = (State.INITIALIZING, State.RUNNING, *TERMINAL)
    return change.target in logged_states or change.reason is not None or bool(change.metadata)


def _time_text(value: str | None) -> str | None:
    return None if value is None else rfc3339(parse_time(value))


_SLICE = 500
_CHILD_TABLES = {"executors": t.executor, "inputs": t.input_, "outputs": t.output, "tag_rows": t.tag}
_TASK_JSON = ("volumes", "tags", "zones", "backend_parameters")


def _children(task: Task) -> dict[str, list[dict[str, Any]]]:
    """The child rows of a task, keyed like the JSON parameters of `_CREATE_POSTGRES`."""
    return {
        "executors": [{"idx": i} | msgspec.to_builtins(e) for i, e in enumerate(task.executors)],
        "inputs": [{"idx": i} | msgspec.to_builtins(x) for i, x in enumerate(task.inputs or [])],
        "outputs": [{"idx": i} | msgspec.to_builtins(x) for i, x in enumerate(task.outputs or [])],
        "tag_rows": [{"key": k, "value": v} for k, v in (task.tags or {}).items()],
    }


def _json(value: Any) -> str | None:
    return None if value is None else msgspec.json.encode(value).decode()


# A task and its children in one statement, one round trip: the children travel as JSON arrays.
# The foreign keys are checked at the end of the statement, when the task row exists.
_CREATE_POSTGRES = sa.text(
    """
WITH new_task AS (
  INSERT INTO task (id, owner, state, created_at, name, description, volumes, tags, cpu_cores, ram_gb,
                    disk_gb, preemptible, zones, backend_parameters, backend_parameters_strict)
  VALUES (:id, :owner, CAST(:state AS task_state), :created_at, :name, :description, CAST(:volumes AS jsonb),
          CAST(:tags AS jsonb), :cpu_cores, :ram_gb, :disk_gb, :preemptible, CAST(:zones AS jsonb),
          CAST(:backend_parameters AS jsonb), :backend_parameters_strict)
), new_executor AS (
  INSERT INTO executor (task_id, idx, image, command, workdir, stdin, stdout, stderr, env, ignore_error)
  SELECT :id, x.idx, x.image, x.command, x.workdir, x.stdin, x.stdout, x.stderr, x.env, x.ignore_error
  FROM jsonb_to_recordset(CAST(:executors AS jsonb)) AS x(idx int, image text, command jsonb, workdir text,
       stdin text, stdout text, stderr text, env jsonb, ignore_error boolean)
), new_input AS (
  INSERT INTO input (task_id, idx, path, type, name, description, url, content, streamable)
  SELECT :id, x.idx, x.path, CAST(x.type AS file_type), x.name, x.description, x.url, x.content, x.streamable
  FROM jsonb_to_recordset(CAST(:inputs AS jsonb)) AS x(idx int, path text, type text, name text,
       description text, url text, content text, streamable boolean)
), new_output AS (
  INSERT INTO output (task_id, idx, path, url, type, name, description, path_prefix)
  SELECT :id, x.idx, x.path, x.url, CAST(x.type AS file_type), x.name, x.description, x.path_prefix
  FROM jsonb_to_recordset(CAST(:outputs AS jsonb)) AS x(idx int, path text, url text, type text, name text,
       description text, path_prefix text)
)
INSERT INTO tag (task_id, key, value)
SELECT :id, x.key, x.value FROM jsonb_to_recordset(CAST(:tag_rows AS jsonb)) AS x(key text, value text)
"""
)

# The resource columns are named as the fields of tesResources.
_RESOURCES = Resources.__struct_fields__
_TASK_COLUMNS = (
    "id",
    "state",
    "created_at",
    "name",
    "description",
    *_RESOURCES,
    "volumes",
    "tags",
)
_EXECUTOR = ["image", "command", "workdir", "stdin", "stdout", "stderr", "env", "ignore_error"]
_INPUT = ["path", "type", "name", "description", "url", "streamable"]
_OUTPUT = ["path", "url", "type", "name", "description", "path_prefix"]
_LOG = ["attempt", "start_time", "end_time", "metadata"]
_EXECUTOR_LOG = ["attempt", "idx", "exit_code", "start_time", "end_time"]
_OUTPUT_FILE = ["attempt", "url", "path", "size_bytes"]


@functools.cache
def _details(view: View) -> sa.Select[Any]:
    """The tasks whose ids are bound to `ids`, newest first, with what `view` shows, in one statement.

    Built once per view: constructing it costs far more than running it. Each child table arrives as
    one JSON array per task, aggregated only for the tasks asked for.
    """
    c = t.task.c
    columns = ("id", "state", "owner") if view is View.MINIMAL else (*_TASK_COLUMNS, "owner")
    page = (
        sa.select(*(c[n] for n in columns))
        .where(c.id.in_(sa.bindparam("ids", expanding=True)))
        .subquery("page")
    )
    if view is View.MINIMAL:
        return sa.select(*page.c).order_by(page.c.id.desc())
    full = view is View.FULL
    children = [
        json_rows(t.executor, _EXECUTOR, page, "idx").label("executors"),
        json_rows(t.input_, [*_INPUT, "content"] if full else _INPUT, page, "idx").label("inputs"),
        json_rows(t.output, _OUTPUT, page, "idx").label("outputs"),
        json_rows(t.task_log, _LOG, page, "attempt").label("logs"),
        json_rows(
            t.executor_log, [*_EXECUTOR_LOG, "stdout", "stderr"] if full else _EXECUTOR_LOG, page, "idx"
        ).label("executor_logs"),
        json_rows(t.output_file_log, _OUTPUT_FILE, page, "id").label("output_files"),
    ]
    if full:
        children.append(json_rows(t.system_log, ["attempt", "line"], page, "id").label("system_logs"))
    return sa.select(*page.c, *children).order_by(page.c.id.desc())


def _task(r: Any, view: View) -> Task:
    if view is View.MINIMAL:
        # Only id and state are loaded; the view renders nothing else.
        return Task(id=r.id, state=State(r.state), executors=[], creation_time="")
    full = view is View.FULL
    executor_logs: list[ExecutorLogRow] = decode_rows(r.executor_logs, ExecutorLogRow)
    files: list[OutputFileRow] = decode_rows(r.output_files, OutputFileRow)
    system: list[SystemLogRow] = decode_rows(r.system_logs, SystemLogRow) if full else []
    logs = [
        TaskLog(
            logs=[
                ExecutorLog(
                    exit_code=e.exit_code,
                    start_time=_time_text(e.start_time),
                    end_time=_time_text(e.end_time),
                    stdout=e.stdout,
                    stderr=e.stderr,
                )
                for e in executor_logs
                if e.attempt == log.attempt and e.exit_code is not None
            ],
            outputs=[
                OutputFileLog(url=f.url, path=f.path, size_bytes=str(f.size_bytes))
                for f in files
                if f.attempt == log.attempt
            ],
            metadata=log.metadata or None,
            start_time=_time_text(log.start_time),
            end_time=_time_text(log.end_time),
            system_logs=[s.line for s in system if s.attempt == log.attempt] or None,
        )
        for log in decode_rows(r.logs, LogRow)
    ]
    resources = Resources(**{name: getattr(r, name) for name in _RESOURCES})
    return Task(
        id=r.id,
        owner=r.owner,
        state=State(r.state),
        creation_time=rfc3339(r.created_at),
        name=r.name,
        description=r.description,
        executors=decode_rows(r.executors, Executor),
        inputs=decode_rows(r.inputs, Input) or None,
        outputs=decode_rows(r.outputs, Output) or None,
        resources=resources if resources != Resources() else None,
        volumes=r.volumes,
        tags=r.tags or None,
        logs=logs or None,
    )
