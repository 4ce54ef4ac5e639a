"""SqlAlchemyTaskStore: the TaskStore port on PostgreSQL and SQLite.

A task is written once, relationally, in one transaction. Reads load a page of tasks with one query
per table (`task_id IN (...)`), skipping the columns the requested view leaves out. State changes
lock the task row, check the domain's transition table and record the move in `state_transition`
in the same transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from poiesis.adapters.sqlalchemy import schema as t
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
from poiesis.ports.store import Transition

ATTEMPT = 0  # Poiesis does not retry tasks: one task log per task.


class StoreUnavailable(Exception):
    """The database could not be reached or failed for a reason that may pass."""


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


def rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _drop_none(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


class SqlAlchemyTaskStore:
    def __init__(self, engine: AsyncEngine, *, reader: AsyncEngine | None = None) -> None:
        self._engine = engine
        self._reader = reader or engine
        self._postgres = engine.dialect.name == "postgresql"

    # --- writes -----------------------------------------------------------------------------

    async def create(self, task: Task, *, owner: str, system_logs: list[str]) -> None:
        row: dict[str, Any] = {
            "id": task.id,
            "owner": owner,
            "state": task.state,
            "created_at": _ts(task.creation_time),
            "name": task.name,
            "description": task.description,
            "volumes": task.volumes,
            "tags": task.tags or {},
        }
        r = task.resources or Resources()
        row |= {
            "cpu_cores": r.cpu_cores,
            "ram_gb": r.ram_gb,
            "disk_gb": r.disk_gb,
            "preemptible": r.preemptible,
            "zones": r.zones,
            "backend_parameters": r.backend_parameters,
            "backend_parameters_strict": r.backend_parameters_strict,
        }
        try:
            async with self._engine.begin() as conn:
                await conn.execute(sa.insert(t.task), [row])
                await conn.execute(
                    sa.insert(t.executor),
                    [
                        {
                            "task_id": task.id,
                            "idx": i,
                            "image": e.image,
                            "command": e.command,
                            "workdir": e.workdir,
                            "stdin": e.stdin,
                            "stdout": e.stdout,
                            "stderr": e.stderr,
                            "env": e.env,
                            "ignore_error": e.ignore_error,
                        }
                        for i, e in enumerate(task.executors)
                    ],
                )
                if task.inputs:
                    await conn.execute(
                        sa.insert(t.input_),
                        [
                            {
                                "task_id": task.id,
                                "idx": i,
                                "path": x.path,
                                "type": x.type,
                                "name": x.name,
                                "description": x.description,
                                "url": x.url,
                                "content": x.content,
                                "streamable": x.streamable,
                            }
                            for i, x in enumerate(task.inputs)
                        ],
                    )
                if task.outputs:
                    await conn.execute(
                        sa.insert(t.output),
                        [
                            {
                                "task_id": task.id,
                                "idx": i,
                                "path": x.path,
                                "url": x.url,
                                "type": x.type,
                                "name": x.name,
                                "description": x.description,
                                "path_prefix": x.path_prefix,
                            }
                            for i, x in enumerate(task.outputs)
                        ],
                    )
                if task.tags:
                    await conn.execute(
                        sa.insert(t.tag),
                        [{"task_id": task.id, "key": k, "value": v} for k, v in task.tags.items()],
                    )
                if system_logs:
                    await self._ensure_log(conn, task.id)
                    await conn.execute(
                        sa.insert(t.system_log),
                        [{"task_id": task.id, "attempt": ATTEMPT, "line": line} for line in system_logs],
                    )
        except IntegrityError as exc:
            raise Conflict(f"task {task.id} already exists") from exc
        except (OperationalError, OSError) as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def transition(self, task_id: str, target: State, *, now: str) -> bool:
        at = _ts(now)
        async with self._engine.begin() as conn:
            current = await self._locked_state(conn, task_id)
            if not can_transition(current, target):
                return False
            await conn.execute(sa.update(t.task).where(t.task.c.id == task_id).values(state=target))
            await conn.execute(
                sa.insert(t.state_transition),
                [{"task_id": task_id, "source": current, "target": target, "at": at}],
            )
            if target in (State.INITIALIZING, State.RUNNING):
                await self._ensure_log(conn, task_id)
                await conn.execute(
                    sa.update(t.task_log)
                    .where(
                        t.task_log.c.task_id == task_id,
                        t.task_log.c.start_time.is_(None),
                    )
                    .values(start_time=at)
                )
            elif target in TERMINAL:
                await self._ensure_log(conn, task_id)
                await conn.execute(
                    sa.update(t.task_log)
                    .where(t.task_log.c.task_id == task_id, t.task_log.c.end_time.is_(None))
                    .values(end_time=at)
                )
            return True

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
        values = _drop_none(
            start_time=_ts(start_time) if start_time else None,
            end_time=_ts(end_time) if end_time else None,
            exit_code=exit_code,
            stdout=stdout,
            stderr=stderr,
        )
        key = {"task_id": task_id, "attempt": ATTEMPT, "idx": index}
        where = [t.executor_log.c[k] == v for k, v in key.items()]
        async with self._engine.begin() as conn:
            await self._locked_state(conn, task_id)  # serialises this task's writers
            await self._ensure_log(conn, task_id)
            found = (await conn.execute(sa.select(t.executor_log.c.idx).where(*where))).first()
            if found is None:
                await conn.execute(sa.insert(t.executor_log), [key | values])
            elif values:
                await conn.execute(sa.update(t.executor_log).where(*where).values(**values))

    async def append_system_log(self, task_id: str, line: str) -> None:
        async with self._engine.begin() as conn:
            await self._locked_state(conn, task_id)
            await self._ensure_log(conn, task_id)
            await conn.execute(
                sa.insert(t.system_log),
                [{"task_id": task_id, "attempt": ATTEMPT, "line": line}],
            )

    async def add_output_files(self, task_id: str, files: list[OutputFileLog]) -> None:
        async with self._engine.begin() as conn:
            await self._locked_state(conn, task_id)
            await self._ensure_log(conn, task_id)
            if files:
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
                        for f in files
                    ],
                )

    async def set_metadata(self, task_id: str, metadata: dict[str, str]) -> None:
        async with self._engine.begin() as conn:
            await self._locked_state(conn, task_id)
            await self._ensure_log(conn, task_id)
            row = (
                await conn.execute(
                    sa.select(t.task_log.c.metadata).where(
                        t.task_log.c.task_id == task_id, t.task_log.c.attempt == ATTEMPT
                    )
                )
            ).one()
            merged = dict(row.metadata or {}) | metadata
            await conn.execute(
                sa.update(t.task_log)
                .where(t.task_log.c.task_id == task_id, t.task_log.c.attempt == ATTEMPT)
                .values(metadata=merged)
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
        query = sa.select(*_task_columns(view)).where(t.task.c.id == task_id)
        if owner is not None:
            query = query.where(t.task.c.owner == owner)
        async with self._reader.connect() as conn:
            rows = (await conn.execute(query)).all()
            if not rows:
                raise TaskNotFound(task_id)
            return (await self._assemble(conn, rows, view))[0]

    async def list_tasks(self, query: TaskQuery) -> TaskPage:
        c = t.task.c
        stmt = sa.select(*_task_columns(query.view))
        if query.owner is not None:
            stmt = stmt.where(c.owner == query.owner)
        if query.state is not None:
            stmt = stmt.where(c.state == query.state)
        if query.name_prefix:
            stmt = stmt.where(c.name.startswith(query.name_prefix, autoescape=True))
        if query.tags:
            stmt = stmt.where(*self._tag_filters(query.tags))
        if query.after is not None:
            stmt = stmt.where(c.id < query.after)
        stmt = stmt.order_by(c.id.desc()).limit(query.page_size + 1)
        async with self._reader.connect() as conn:
            rows = (await conn.execute(stmt)).all()
            more = len(rows) > query.page_size
            rows = rows[: query.page_size]
            tasks = await self._assemble(conn, rows, query.view)
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
        return [
            Transition(source=State(r.source), target=State(r.target), at=rfc3339(r.at) or "") for r in rows
        ]

    async def ids_in_states(self, states: Collection[State]) -> list[str]:
        async with self._reader.connect() as conn:
            rows = await conn.execute(
                sa.select(t.task.c.id).where(t.task.c.state.in_(list(states))).order_by(t.task.c.id)
            )
            return [r.id for r in rows]

    async def ping(self) -> None:
        try:
            async with self._reader.connect() as conn:
                await conn.execute(sa.select(sa.literal(1)))
        except (DBAPIError, OSError) as exc:
            raise StoreUnavailable(str(exc)) from exc

    # --- internals ----------------------------------------------------------------------------

    def _tag_filters(self, tags: dict[str, str]) -> list[sa.ColumnElement[bool]]:
        if self._postgres:
            # One containment test for the keys with values, one existence test per bare key: both
            # are answered by the GIN index on task.tags, or checked on the rows of another index.
            valued = {k: v for k, v in tags.items() if v}
            out: list[sa.ColumnElement[bool]] = []
            if valued:
                out.append(t.task.c.tags.op("@>")(sa.cast(valued, t.JSON)))
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

    async def _assemble(self, conn: AsyncConnection, rows: Sequence[sa.Row[Any]], view: View) -> list[Task]:
        if view is View.MINIMAL:
            return [Task(id=r.id, state=State(r.state), executors=[], creation_time="") for r in rows]
        ids = [r.id for r in rows]
        full = view is View.FULL

        async def by_task(
            table: sa.Table, columns: list[sa.ColumnElement[Any]], order: str
        ) -> dict[str, list[Any]]:
            grouped: dict[str, list[Any]] = defaultdict(list)
            if ids:
                result = await conn.execute(
                    sa.select(table.c.task_id, *columns)
                    .where(table.c.task_id.in_(ids))
                    .order_by(table.c.task_id, table.c[order])
                )
                for r in result:
                    grouped[r.task_id].append(r)
            return grouped

        ex = t.executor.c
        executors = await by_task(
            t.executor,
            [
                ex.image,
                ex.command,
                ex.workdir,
                ex.stdin,
                ex.stdout,
                ex.stderr,
                ex.env,
                ex.ignore_error,
            ],
            "idx",
        )
        ic = t.input_.c
        input_cols: list[sa.ColumnElement[Any]] = [
            ic.path,
            ic.type,
            ic.name,
            ic.description,
            ic.url,
            ic.streamable,
        ]
        inputs = await by_task(t.input_, [*input_cols, ic.content] if full else input_cols, "idx")
        oc = t.output.c
        outputs = await by_task(
            t.output,
            [oc.path, oc.url, oc.type, oc.name, oc.description, oc.path_prefix],
            "idx",
        )
        lc = t.task_log.c
        logs = await by_task(t.task_log, [lc.attempt, lc.start_time, lc.end_time, lc.metadata], "attempt")
        el = t.executor_log.c
        el_cols: list[sa.ColumnElement[Any]] = [el.attempt, el.idx, el.start_time, el.end_time, el.exit_code]
        exec_logs = await by_task(
            t.executor_log, [*el_cols, el.stdout, el.stderr] if full else el_cols, "idx"
        )
        fl = t.output_file_log.c
        files = await by_task(t.output_file_log, [fl.attempt, fl.url, fl.path, fl.size_bytes], "id")
        sl = t.system_log.c
        system = await by_task(t.system_log, [sl.attempt, sl.line], "id") if full else {}

        tasks = []
        for r in rows:
            task_logs = [
                TaskLog(
                    logs=[
                        ExecutorLog(
                            exit_code=e.exit_code,
                            start_time=rfc3339(e.start_time),
                            end_time=rfc3339(e.end_time),
                            stdout=e.stdout if full else None,
                            stderr=e.stderr if full else None,
                        )
                        for e in exec_logs.get(r.id, [])
                        if e.attempt == log.attempt and e.exit_code is not None
                    ],
                    outputs=[
                        OutputFileLog(url=f.url, path=f.path, size_bytes=str(f.size_bytes))
                        for f in files.get(r.id, [])
                        if f.attempt == log.attempt
                    ],
                    metadata=log.metadata or None,
                    start_time=rfc3339(log.start_time),
                    end_time=rfc3339(log.end_time),
                    system_logs=[s.line for s in system.get(r.id, []) if s.attempt == log.attempt] or None,
                )
                for log in logs.get(r.id, [])
            ]
            resources = Resources(
                cpu_cores=r.cpu_cores,
                preemptible=r.preemptible,
                ram_gb=r.ram_gb,
                disk_gb=r.disk_gb,
                zones=r.zones,
                backend_parameters=r.backend_parameters,
                backend_parameters_strict=r.backend_parameters_strict,
            )
            tasks.append(
                Task(
                    id=r.id,
                    state=State(r.state),
                    creation_time=rfc3339(r.created_at) or "",
                    name=r.name,
                    description=r.description,
                    executors=[
                        Executor(
                            image=e.image,
                            command=e.command,
                            workdir=e.workdir,
                            stdin=e.stdin,
                            stdout=e.stdout,
                            stderr=e.stderr,
                            env=e.env,
                            ignore_error=e.ignore_error,
                        )
                        for e in executors.get(r.id, [])
                    ],
                    inputs=[
                        Input(
                            path=x.path,
                            type=x.type,
                            name=x.name,
                            description=x.description,
                            url=x.url,
                            content=x.content if full else None,
                            streamable=x.streamable,
                        )
                        for x in inputs.get(r.id, [])
                    ]
                    or None,
                    outputs=[
                        Output(
                            path=x.path,
                            url=x.url,
                            type=x.type,
                            name=x.name,
                            description=x.description,
                            path_prefix=x.path_prefix,
                        )
                        for x in outputs.get(r.id, [])
                    ]
                    or None,
                    resources=resources if resources != Resources() else None,
                    volumes=r.volumes,
                    tags=r.tags or None,
                    logs=task_logs or None,
                )
            )
        return tasks


def _task_columns(view: View) -> list[sa.ColumnElement[Any]]:
    c = t.task.c
    if view is View.MINIMAL:
        return [c.id, c.state]
    return [
        c.id,
        c.state,
        c.created_at,
        c.name,
        c.description,
        c.cpu_cores,
        c.ram_gb,
        c.disk_gb,
        c.preemptible,
        c.zones,
        c.backend_parameters,
        c.backend_parameters_strict,
        c.volumes,
        c.tags,
    ]
