"""Executor sequencing: what a task's observed events mean for its state and logs.

Every backend reports the same events (staging began, an executor started or exited, outputs were
uploaded, something outside the executors failed, a cancel, the capacity was reclaimed) and folds them
through `apply`. The result is the task's state, one record per executor that started, and the
`system_logs` lines; what runs next comes from `next_step`. Events that make no sense in the current
progress (an executor starting out of order, anything after a terminal state) change nothing.
"""

from __future__ import annotations

import msgspec
from msgspec.structs import replace

from poiesis.domain.states import State, can_transition, is_terminal
from poiesis.domain.tes import Executor


class StagingStarted(msgspec.Struct, frozen=True, tag=True):
    pass


class ExecutorStarted(msgspec.Struct, frozen=True, tag=True):
    index: int
    at: str


class ExecutorExited(msgspec.Struct, frozen=True, tag=True):
    index: int
    exit_code: int
    at: str
    started: str | None = None
    """When it started, as precisely as its end is known (it may refine what ExecutorStarted said)."""


class OutputsUploaded(msgspec.Struct, frozen=True, tag=True):
    pass


class SystemFailure(msgspec.Struct, frozen=True, tag=True):
    reason: str


class Preempted(msgspec.Struct, frozen=True, tag=True):
    reason: str


class LimitExceeded(msgspec.Struct, frozen=True, tag=True):
    """A running task went over a limit of its own resources (its disk_gb): the executors' doing."""

    reason: str


class CancelRequested(msgspec.Struct, frozen=True, tag=True):
    pass


class ResourcesGone(msgspec.Struct, frozen=True, tag=True):
    pass


Event = (
    StagingStarted
    | ExecutorStarted
    | ExecutorExited
    | OutputsUploaded
    | SystemFailure
    | Preempted
    | LimitExceeded
    | CancelRequested
    | ResourcesGone
)


class ExecutorRecord(msgspec.Struct, frozen=True, kw_only=True):
    start_time: str
    end_time: str | None = None
    exit_code: int | None = None


class Progress(msgspec.Struct, frozen=True, kw_only=True):
    state: State = State.QUEUED
    executors: tuple[ExecutorRecord, ...] = ()
    system_logs: tuple[str, ...] = ()
    deliver_after_failure: bool = False
    """After an executor error, upload the outputs that exist before the task ends (a workflow
    engine's log files of a failed step); for backends that can still run the upload then."""


class RunExecutor(msgspec.Struct, frozen=True, tag=True):
    index: int


class StageOut(msgspec.Struct, frozen=True, tag=True):
    after_failure: bool = False
    """An executor failed: upload what exists, an output that is missing is no error."""


class Finish(msgspec.Struct, frozen=True, tag=True):
    state: State


class Wait(msgspec.Struct, frozen=True, tag=True):
    pass


Step = RunExecutor | StageOut | Finish | Wait


def final_state(executors: list[Executor], records: tuple[ExecutorRecord, ...]) -> State:
    """COMPLETE when every executor exited 0; EXECUTOR_ERROR if any recorded a non-zero code,
    including one whose `ignore_error` let the task go on (the code is kept and reported)."""
    if any(r.exit_code not in (0, None) for r in records):
        return State.EXECUTOR_ERROR
    return State.COMPLETE


def _may_continue(executors: list[Executor], records: tuple[ExecutorRecord, ...]) -> bool:
    return all(r.exit_code == 0 or bool(executors[i].ignore_error) for i, r in enumerate(records))


def next_step(executors: list[Executor], has_outputs: bool, progress: Progress) -> Step:
    if is_terminal(progress.state) or progress.state is State.CANCELING:
        return Wait()
    records = progress.executors
    if records and records[-1].exit_code is None:
        return Wait()
    if not _may_continue(executors, records):
        if has_outputs and progress.deliver_after_failure:
            return StageOut(after_failure=True)
        return Finish(State.EXECUTOR_ERROR)
    if len(records) < len(executors):
        return RunExecutor(len(records))
    if has_outputs:
        return StageOut()
    return Finish(final_state(executors, records))


def _move(progress: Progress, target: State) -> Progress:
    if progress.state is target or not can_transition(progress.state, target):
        return progress
    return replace(progress, state=target)


def apply(executors: list[Executor], has_outputs: bool, progress: Progress, event: Event) -> Progress:
    if is_terminal(progress.state):
        return progress
    match event:
        case StagingStarted():
            return _move(progress, State.INITIALIZING)
        case ExecutorStarted(index=index, at=at):
            if next_step(executors, has_outputs, progress) != RunExecutor(index):
                return progress
            started = replace(progress, executors=(*progress.executors, ExecutorRecord(start_time=at)))
            return _move(started, State.RUNNING)
        case ExecutorExited(index=index, exit_code=code, at=at):
            records = progress.executors
            if index != len(records) - 1 or records[index].exit_code is not None:
                return progress
            done = replace(records[index], end_time=at, exit_code=code)
            progress = replace(progress, executors=(*records[:index], done))
            step = next_step(executors, has_outputs, progress)
            return _move(progress, step.state) if isinstance(step, Finish) else progress
        case OutputsUploaded():
            if not isinstance(next_step(executors, has_outputs, progress), StageOut):
                return progress
            return _move(progress, final_state(executors, progress.executors))
        case SystemFailure(reason=reason):
            if next_step(executors, has_outputs, progress) == StageOut(after_failure=True):
                # The upload after an executor error failed: the task's failure is the executor's.
                moved = _move(progress, State.EXECUTOR_ERROR)
                return replace(
                    moved, system_logs=(*progress.system_logs, f"after the executor error: {reason}")
                )
            moved = _move(progress, State.SYSTEM_ERROR)
            if moved is progress:
                return progress
            return replace(moved, system_logs=(*progress.system_logs, reason))
        case Preempted(reason=reason):
            moved = _move(progress, State.PREEMPTED)
            if moved is progress:
                return progress
            return replace(moved, system_logs=(*progress.system_logs, reason))
        case LimitExceeded(reason=reason):
            if progress.state is not State.RUNNING:
                return progress
            moved = _move(progress, State.EXECUTOR_ERROR)
            return replace(moved, system_logs=(*progress.system_logs, reason))
        case CancelRequested():
            return _move(progress, State.CANCELING)
        case ResourcesGone():
            return _move(progress, State.CANCELED)
    return progress
