"""FakeTaskStore: the TaskStore port in memory, for unit tests. It passes the same contract suite
as the SQLAlchemy store (tests/contracts/store.py, run by tests/unit/test_fake_store.py), so a test
that passes against it holds against SQLite and PostgreSQL as far as the contract goes."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from poiesis.domain.errors import Conflict, KeyReused, TaskNotFound
from poiesis.domain.idempotency import Key
from poiesis.domain.listing import DocumentPage, TaskPage, TaskQuery
from poiesis.domain.states import TERMINAL, State, can_transition
from poiesis.domain.tes import ExecutorLog, OutputFileLog, Resources, Task, TaskLog, View
from poiesis.domain.times import parse_time, rfc3339
from poiesis.domain.views import encoded, encoded_page
from poiesis.ports.store import Applied, Change, ExecutorRan, Moved, OpenTask, OutputsRecorded, Transition


def _text(value: datetime | None) -> str | None:
    """A time as the documents a read returns show it: RFC 3339, in UTC, to the microsecond."""
    return None if value is None else rfc3339(value)


@dataclass
class _Log:
    start_time: str | None = None
    end_time: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    system_logs: list[str] = field(default_factory=list)
    executors: dict[int, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, OutputFileLog] = field(default_factory=dict)


@dataclass
class _Row:
    task: Task
    owner: str
    state: State
    log: _Log | None = None
    history: list[Transition] = field(default_factory=list)

    def ensure_log(self) -> _Log:
        if self.log is None:
            self.log = _Log()
        return self.log


class FakeTaskStore:
    def __init__(self) -> None:
        self._rows: dict[str, _Row] = {}
        self._keys: dict[tuple[str, str], Key] = {}
        """(owner, key) -> Key(id of the task it made, its request's fingerprint)."""
        self.transactions = 0
        """Write transactions made (each single write and each `apply` is one)."""

    # --- writes -------------------------------------------------------------------------------

    async def create_once(self, task: Task, *, owner: str, system_logs: list[str], key: Key) -> str:
        taken = self._keys.get((owner, key.value))
        if taken is not None:
            if taken.fingerprint != key.fingerprint:
                raise KeyReused(taken.value)
            return taken.value
        await self.create(task, owner=owner, system_logs=system_logs)
        self._keys[(owner, key.value)] = Key(task.id, key.fingerprint)  # the task's id, its request
        return task.id

    async def create(self, task: Task, *, owner: str, system_logs: list[str]) -> None:
        if task.id in self._rows:
            raise Conflict(f"task {task.id} already exists")
        stored = msgspec.structs.replace(
            task,
            creation_time=rfc3339(parse_time(task.creation_time)),
            resources=task.resources if task.resources and task.resources != Resources() else None,
            tags=task.tags or None,
            inputs=task.inputs or None,
            outputs=task.outputs or None,
            logs=None,
            owner=None,
        )
        row = _Row(task=stored, owner=owner, state=task.state)
        if system_logs:
            row.ensure_log().system_logs.extend(system_logs)
        self._rows[task.id] = row
        self.transactions += 1

    async def transition(
        self,
        task_id: str,
        target: State,
        *,
        now: datetime,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> bool:
        applied = await self.apply(task_id, [Moved(target=target, at=now, reason=reason, metadata=metadata)])
        return bool(applied.moved)

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
        await self.apply(task_id, [change])

    async def add_output_files(self, task_id: str, files: list[OutputFileLog]) -> None:
        await self.apply(task_id, [OutputsRecorded(files=files)])

    async def apply(self, task_id: str, changes: Sequence[Change]) -> Applied:
        row = self._row(task_id)
        moved: list[State] = []
        for change in changes:
            match change:
                case Moved() if can_transition(row.state, change.target):
                    self._move(row, change)
                    moved.append(change.target)
                case ExecutorRan():
                    values = {
                        "start_time": _text(change.start_time),
                        "end_time": _text(change.end_time),
                        "exit_code": change.exit_code,
                        "stdout": change.stdout,
                        "stderr": change.stderr,
                    }
                    record = row.ensure_log().executors.setdefault(change.index, {})
                    record.update({k: v for k, v in values.items() if v is not None})
                case OutputsRecorded():
                    log = row.ensure_log()
                    fresh = {f.url: f for f in change.files if f.url not in log.outputs}
                    for url, f in fresh.items():
                        log.outputs[url] = OutputFileLog(
                            url=url, path=f.path, size_bytes=str(int(f.size_bytes))
                        )
        self.transactions += 1
        return Applied(state=row.state, moved=tuple(moved))

    def _move(self, row: _Row, change: Moved) -> None:
        row.history.append(Transition(source=row.state, target=change.target, at=change.at.astimezone(UTC)))
        at = _text(change.at)
        row.state = change.target
        if change.target in (State.INITIALIZING, State.RUNNING):
            log = row.ensure_log()
            log.start_time = log.start_time or at
        elif change.target in TERMINAL:
            log = row.ensure_log()
            log.end_time = log.end_time or at
        if change.reason is not None:
            row.ensure_log().system_logs.append(change.reason)
        if change.metadata:
            row.ensure_log().metadata.update(change.metadata)

    async def append_system_log(self, task_id: str, line: str) -> None:
        self._row(task_id).ensure_log().system_logs.append(line)
        self.transactions += 1

    async def set_metadata(self, task_id: str, metadata: dict[str, str]) -> None:
        self._row(task_id).ensure_log().metadata.update(metadata)
        self.transactions += 1

    # --- reads --------------------------------------------------------------------------------

    def _row(self, task_id: str, owner: str | None = None) -> _Row:
        row = self._rows.get(task_id)
        if row is None or (owner is not None and row.owner != owner):
            raise TaskNotFound(task_id)
        return row

    async def state(self, task_id: str, *, owner: str | None = None) -> State:
        return self._row(task_id, owner).state

    async def get(self, task_id: str, *, view: View = View.FULL, owner: str | None = None) -> Task:
        return self._render(self._row(task_id, owner), view)

    def _render(self, row: _Row, view: View) -> Task:
        if view is View.MINIMAL:
            return Task(id=row.task.id, state=row.state, executors=[], creation_time="")
        full = view is View.FULL
        task = row.task
        inputs = task.inputs
        if inputs and not full:
            inputs = [msgspec.structs.replace(i, content=None) for i in inputs]
        logs = None
        if row.log is not None:
            log = row.log
            runs = [
                ExecutorLog(
                    exit_code=e["exit_code"],
                    start_time=e.get("start_time"),
                    end_time=e.get("end_time"),
                    stdout=e.get("stdout") if full else None,
                    stderr=e.get("stderr") if full else None,
                )
                for _, e in sorted(log.executors.items())
                if e.get("exit_code") is not None
            ]
            logs = [
                TaskLog(
                    logs=runs,
                    outputs=list(log.outputs.values()),
                    metadata=dict(log.metadata) or None,
                    start_time=log.start_time,
                    end_time=log.end_time,
                    system_logs=(list(log.system_logs) or None) if full else None,
                )
            ]
        return msgspec.structs.replace(task, state=row.state, owner=row.owner, inputs=inputs, logs=logs)

    async def document(self, task_id: str, *, view: View, owner: str | None = None) -> bytes:
        return encoded(await self.get(task_id, view=view, owner=owner), view)

    async def documents(self, query: TaskQuery) -> DocumentPage:
        return encoded_page(await self.list_tasks(query), query.view)

    async def list_tasks(self, query: TaskQuery) -> TaskPage:
        def matches(row: _Row) -> bool:
            task = row.task
            if query.owner is not None and row.owner != query.owner:
                return False
            if query.state is not None and row.state is not query.state:
                return False
            if query.name_prefix and not (task.name or "").startswith(query.name_prefix):
                return False
            tags = task.tags or {}
            if any(k not in tags or (v and tags[k] != v) for k, v in query.tags.items()):
                return False
            return query.after is None or task.id < query.after

        chosen = sorted((r for r in self._rows.values() if matches(r)), key=lambda r: r.task.id, reverse=True)
        page = chosen[: query.page_size]
        more = len(chosen) > query.page_size
        tasks = [self._render(r, query.view) for r in page]
        return TaskPage(tasks=tasks, next_after=tasks[-1].id if more and tasks else None)

    async def history(self, task_id: str) -> list[Transition]:
        return list(self._row(task_id).history)

    async def ids_in_states(self, states: Collection[State]) -> list[str]:
        return sorted(i for i, r in self._rows.items() if r.state in states)

    async def open_tasks(self) -> list[OpenTask]:
        return [
            OpenTask(i, r.owner, r.state) for i, r in sorted(self._rows.items()) if r.state not in TERMINAL
        ]

    async def count_by_state(self, *, owner: str | None = None) -> dict[State, int]:
        counts: dict[State, int] = {}
        for row in self._rows.values():
            if owner is None or row.owner == owner:
                counts[row.state] = counts.get(row.state, 0) + 1
        return counts

    async def ping(self) -> None:
        return None
