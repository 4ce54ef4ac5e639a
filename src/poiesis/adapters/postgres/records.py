"""PostgresTaskRecords: what recording a task's progress needs of the store (`TaskRecords`), on
asyncpg alone.

A Task Recorder starts in every task Pod; without SQLAlchemy it starts in a fraction of the time
and the memory. It reads the task as stored (rendered by PostgreSQL, decoded by msgspec), its
state, and applies what one Pod status shows in one transaction, exactly as
`SqlAlchemyTaskStore.apply` does: the store contract suite runs against a store whose `get`,
`state` and `apply` are these. It holds no idle connection: each call opens one and closes it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

import asyncpg
import msgspec

from poiesis.adapters.postgres import documents
from poiesis.adapters.postgres.errors import asyncpg_errors
from poiesis.domain.errors import TaskNotFound
from poiesis.domain.states import TERMINAL, State
from poiesis.domain.tes import OutputFileLog, Task, View
from poiesis.ports.store import (
    Applied,
    Change,
    ExecutorRan,
    Moved,
    OutputsRecorded,
    outcome,
    steps,
    writes_log,
)

ATTEMPT = 0  # one task log per task, as the store keeps it

_LOCK = "SELECT state FROM task WHERE id = $1 FOR UPDATE"
_STATE = "SELECT state FROM task WHERE id = $1"
_ENSURE_LOG = "INSERT INTO task_log (task_id, attempt) VALUES ($1, $2) ON CONFLICT DO NOTHING"
_MOVE = "UPDATE task SET state = $2 WHERE id = $1"
_TRANSITION = "INSERT INTO state_transition (task_id, source, target, at) VALUES ($1, $2, $3, $4)"
_STARTED = "UPDATE task_log SET start_time = $3 WHERE task_id = $1 AND attempt = $2 AND start_time IS NULL"
_ENDED = "UPDATE task_log SET end_time = $3 WHERE task_id = $1 AND attempt = $2 AND end_time IS NULL"
_SYSTEM_LOG = "INSERT INTO system_log (task_id, attempt, line) VALUES ($1, $2, $3)"
_METADATA = (
    "UPDATE task_log SET metadata = COALESCE(NULLIF(metadata, 'null'::jsonb), '{}'::jsonb) || $3::jsonb"
    " WHERE task_id = $1 AND attempt = $2"
)
# An executor's log: the fields given replace those stored, the others stay.
_EXECUTOR = """
INSERT INTO executor_log (task_id, attempt, idx, start_time, end_time, exit_code, stdout, stderr)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (task_id, attempt, idx) DO UPDATE SET
  start_time = COALESCE(EXCLUDED.start_time, executor_log.start_time),
  end_time = COALESCE(EXCLUDED.end_time, executor_log.end_time),
  exit_code = COALESCE(EXCLUDED.exit_code, executor_log.exit_code),
  stdout = COALESCE(EXCLUDED.stdout, executor_log.stdout),
  stderr = COALESCE(EXCLUDED.stderr, executor_log.stderr)
"""
# Output file logs not recorded yet (by url), in the order given.
_OUTPUTS = """
INSERT INTO output_file_log (task_id, attempt, url, path, size_bytes)
SELECT $1::varchar, $2::int, f.url, f.path, f.size_bytes
FROM unnest($3::text[], $4::text[], $5::bigint[]) WITH ORDINALITY AS f(url, path, size_bytes, n)
WHERE NOT EXISTS (
  SELECT 1 FROM output_file_log o WHERE o.task_id = $1::varchar AND o.attempt = $2::int AND o.url = f.url
)
ORDER BY f.n
"""
_REFRESH = documents.refresh("$1")


def dsn(url: str) -> str:
    """asyncpg's spelling of a PostgreSQL URL (postgresql://, also with a +driver)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+")[0] not in ("postgresql", "postgres"):
        raise ValueError("the Task Recorder writes to PostgreSQL: POIESIS_DATABASE_URL must be postgresql://")
    return f"postgresql://{rest}"


async def _nothing() -> None:
    """No pool to clear: every call has a connection of its own."""


class PostgresTaskRecords:
    def __init__(self, url: str, *, timeout: float = 30) -> None:
        self._dsn = dsn(url)
        self._timeout = timeout

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        async with asyncpg_errors(conflict=None, on_lost=_nothing):
            conn = await asyncpg.connect(self._dsn, timeout=self._timeout)
            try:
                yield conn
            finally:
                await conn.close(timeout=self._timeout)

    async def get(self, task_id: str, *, view: View = View.FULL, owner: str | None = None) -> Task:
        if view is View.MINIMAL:
            return Task(
                id=task_id, state=await self.state(task_id, owner=owner), executors=[], creation_time=""
            )
        query = f"SELECT {documents.expression(view, stored=True)} FROM task WHERE id = $1"
        args: list[str] = [task_id]
        if owner is not None:
            query += " AND owner = $2"
            args.append(owner)
        async with self._connection() as conn:
            text = await conn.fetchval(query, *args)
        if text is None:
            raise TaskNotFound(task_id)
        return msgspec.json.decode(text, type=Task)

    async def state(self, task_id: str, *, owner: str | None = None) -> State:
        query, args = _STATE, [task_id]
        if owner is not None:
            query, args = _STATE + " AND owner = $2", [task_id, owner]
        async with self._connection() as conn:
            value = await conn.fetchval(query, *args)
        if value is None:
            raise TaskNotFound(task_id)
        return State(value)

    async def apply(self, task_id: str, changes: Sequence[Change]) -> Applied:
        async with self._connection() as conn, conn.transaction():
            value = await conn.fetchval(_LOCK, task_id)  # serialises this task's writers
            if value is None:
                raise TaskNotFound(task_id)
            state = State(value)
            made = steps(state, changes)
            if any(writes_log(step.change) for step in made):
                await conn.execute(_ENSURE_LOG, task_id, ATTEMPT)
            for step in made:
                match step.change:
                    case Moved() as move:
                        await self._move(conn, task_id, step.state, move)
                    case ExecutorRan() as e:
                        await conn.execute(
                            _EXECUTOR,
                            task_id,
                            ATTEMPT,
                            e.index,
                            e.start_time,
                            e.end_time,
                            e.exit_code,
                            e.stdout,
                            e.stderr,
                        )
                    case OutputsRecorded(files=files):
                        await _outputs(conn, task_id, files)
            if made:
                await conn.execute(_REFRESH, task_id)
        return outcome(state, made)

    @staticmethod
    async def _move(conn: asyncpg.Connection, task_id: str, current: State, change: Moved) -> None:
        target, at = change.target, change.at
        await conn.execute(_MOVE, task_id, target.value)
        await conn.execute(_TRANSITION, task_id, current.value, target.value, at)
        if target in (State.INITIALIZING, State.RUNNING):
            await conn.execute(_STARTED, task_id, ATTEMPT, at)
        elif target in TERMINAL:
            await conn.execute(_ENDED, task_id, ATTEMPT, at)
        if change.reason is not None:
            await conn.execute(_SYSTEM_LOG, task_id, ATTEMPT, change.reason)
        if change.metadata:
            await conn.execute(_METADATA, task_id, ATTEMPT, msgspec.json.encode(change.metadata).decode())


async def _outputs(conn: asyncpg.Connection, task_id: str, files: list[OutputFileLog]) -> None:
    unique = list({f.url: f for f in files}.values())  # one log per url, as given last
    if unique:
        urls, paths = [f.url for f in unique], [f.path for f in unique]
        await conn.execute(_OUTPUTS, task_id, ATTEMPT, urls, paths, [int(f.size_bytes) for f in unique])
