"""TaskStore: where tasks, their state and their logs live.

Contract, for every adapter:
- `create` stores a validated task in QUEUED; ids are unique (a second create of the same id fails).
- `get`, `state` and every writer raise `TaskNotFound` for an unknown id, or for a task whose owner
  is not `owner` when one is given (to a caller, another user's task does not exist).
- `get` and `list_tasks` fill in `Task.owner` in the BASIC and FULL views.
- `transition` is a guarded write: it moves the task only where `domain.states` allows, atomically
  against concurrent writers, records the move in the task's history and returns whether *this*
  call moved it. Asking for the state a task is already in, or for an illegal move, returns False and
  changes nothing. Entering INITIALIZING or RUNNING stamps the task log's start time once; entering a
  terminal state stamps its end time.
- `record_executor` upserts executor `index`'s log; fields left None keep their stored value, so a
  restarted writer may repeat a write harmlessly. A log without an exit code is not shown in views.
- `add_output_files` records each output URL once: repeating it (a restarted writer) adds nothing.
- `apply` makes several of those writes (`Moved`, `ExecutorRan`, `OutputsRecorded`) in one
  transaction, in order, each with the meaning of its single-write method; a move the lifecycle
  does not allow at its turn is skipped, and `Applied.moved` says which moves happened.
- Listing is newest first, in pages bounded by `query.page_size`, continuing after `query.after`.
- Times are values (`datetime`, timezone-aware), kept to the microsecond; the TES documents a read
  returns show them in RFC 3339.
- Every method raises `StoreUnavailable` when the database cannot be reached; nothing is half written.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Protocol

import msgspec

from poiesis.domain.errors import Unavailable
from poiesis.domain.idempotency import Key
from poiesis.domain.listing import DocumentPage, TaskPage, TaskQuery
from poiesis.domain.states import TERMINAL, State, can_transition
from poiesis.domain.tes import OutputFileLog, Task, View


class StoreUnavailable(Unavailable):
    """The database could not be reached or failed for a reason that may pass."""


class Transition(msgspec.Struct, frozen=True, kw_only=True):
    source: State
    target: State
    at: datetime


class Moved(msgspec.Struct, frozen=True, kw_only=True):
    """A guarded transition, as `transition` makes it."""

    target: State
    at: datetime
    reason: str | None = None
    metadata: dict[str, str] | None = None


class ExecutorRan(msgspec.Struct, frozen=True, kw_only=True):
    """An executor log upserted, as `record_executor` writes it."""

    index: int
    start_time: datetime | None = None
    end_time: datetime | None = None
    exit_code: int | None = None
    stdout: str | None = None
    stderr: str | None = None


class OutputsRecorded(msgspec.Struct, frozen=True, kw_only=True):
    """Output file logs added, as `add_output_files` adds them."""

    files: list[OutputFileLog]


Change = Moved | ExecutorRan | OutputsRecorded


class OpenTask(msgspec.Struct, frozen=True, array_like=True):
    id: str
    owner: str
    state: State


class Step(msgspec.Struct, frozen=True):
    change: Change
    state: State
    """The task's state as the change is made (a move's source)."""


def steps(state: State, changes: Sequence[Change]) -> list[Step]:
    """What a store makes of `changes` on a task in `state`, in order: a move the lifecycle does
    not allow from where the task is by then (the state has gone past it) is left out."""
    out: list[Step] = []
    for change in changes:
        if isinstance(change, Moved):
            if not can_transition(state, change.target):
                continue
            out.append(Step(change, state))
            state = change.target
        else:
            out.append(Step(change, state))
    return out


def outcome(state: State, made: list[Step]) -> Applied:
    """What `apply` answers once `made` (from `steps(state, ...)`) is written."""
    moved = tuple(s.change.target for s in made if isinstance(s.change, Moved))
    return Applied(state=moved[-1] if moved else state, moved=moved)


def writes_log(change: Change) -> bool:
    """Whether a change writes to the task log (a move to CANCELING or PAUSED alone does not)."""
    if not isinstance(change, Moved):
        return True
    logged_states = (State.INITIALIZING, State.RUNNING, *TERMINAL)
    return change.target in logged_states or change.reason is not None or bool(change.metadata)


class Applied(msgspec.Struct, frozen=True, kw_only=True):
    state: State
    """The task's state once the changes were made."""
    moved: tuple[State, ...] = ()
    """The targets of the moves that happened, in order (a skipped move is not here)."""


class TaskRecords(Protocol):
    """What recording a task's progress needs of the store (the Task Recorder's whole use of it)."""

    async def get(self, task_id: str, *, view: View = View.FULL, owner: str | None = None) -> Task: ...

    async def state(self, task_id: str, *, owner: str | None = None) -> State: ...

    async def apply(self, task_id: str, changes: Sequence[Change]) -> Applied:
        """Every change in one transaction, in order (see the module's contract)."""
        ...


class TaskStore(TaskRecords, Protocol):
    async def create(self, task: Task, *, owner: str, system_logs: list[str]) -> None: ...

    async def create_once(self, task: Task, *, owner: str, system_logs: list[str], key: Key) -> str:
        """`create` under an idempotency key of `owner`'s: the task's id, or, when that key is
        taken, the id of the task made with it (nothing stored then). Raises KeyReused when the
        key came with another request (`key.fingerprint`). Concurrent creates with one key make
        one task."""
        ...

    async def list_tasks(self, query: TaskQuery) -> TaskPage: ...

    async def document(self, task_id: str, *, view: View, owner: str | None = None) -> bytes:
        """The task's TES document in `view`, as `domain.views.encoded` makes it of `get`."""
        ...

    async def documents(self, query: TaskQuery) -> DocumentPage:
        """The page `list_tasks` gives, as the tasks' documents in the query's view."""
        ...

    async def transition(
        self,
        task_id: str,
        target: State,
        *,
        now: datetime,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> bool:
        """Move the task to `target` if the lifecycle allows it from its current state; False if not.
        `reason` (a `system_logs` line) and `metadata` (merged into the task log's) are written in
        the same transaction, so no reader sees the state without them."""
        ...

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
    ) -> None: ...

    async def append_system_log(self, task_id: str, line: str) -> None: ...

    async def add_output_files(self, task_id: str, files: list[OutputFileLog]) -> None: ...

    async def set_metadata(self, task_id: str, metadata: dict[str, str]) -> None: ...

    async def history(self, task_id: str) -> list[Transition]: ...

    async def ids_in_states(self, states: Collection[State]) -> list[str]: ...

    async def open_tasks(self) -> list[OpenTask]:
        """Every task not in a terminal state, with its owner and state, oldest first."""
        ...

    async def count_by_state(self, *, owner: str | None = None) -> dict[State, int]:
        """How many tasks are in each state (states with none may be left out). Of every owner: cheap
        whatever the number of tasks stored; of one owner: in proportion to that owner's tasks."""
        ...

    async def ping(self) -> None:
        """Raise if the store cannot serve requests now (readiness)."""
        ...
