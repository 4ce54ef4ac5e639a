"""PodRecorder: what a TaskPod's status shows of its task, written to the store once.

Used by the Task Recorder (trec, the Pod's own sidecar, which also reads the executors' log tails
and the output report and settles the task's end) and by the Task Controller (which writes the
steps on the way before the end it diagnosed, when the recorder could not). Both fold the Pod's
status into lifecycle events (`observe.events`); the recorder remembers what it has written (and
starts from what the stored task shows), so a Pod state seen again costs no write, and everything
one status shows new goes to the store in one transaction (`TaskRecords.apply`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from poiesis.adapters.kubernetes import diagnose, observe
from poiesis.domain import lifecycle
from poiesis.domain.states import State, is_terminal
from poiesis.domain.tes import OutputFileLog, Task
from poiesis.domain.times import parse_time
from poiesis.ports.store import Applied, Change, ExecutorRan, Moved, OutputsRecorded, TaskRecords

Tails = Callable[[int], Awaitable[tuple[str, str]]]
"""Executor `index`'s stdout and stderr tails."""
Outputs = Callable[[], Awaitable[list[OutputFileLog]]]
"""The output file logs the stage-out filer reported."""


def _moment(value: str | datetime) -> datetime:
    """A time the Pod's status gives (RFC 3339 text) as a value."""
    return parse_time(value) if isinstance(value, str) else value


class PodRecorder:
    def __init__(
        self,
        store: TaskRecords,
        task: Task,
        now: Callable[[], datetime],
        *,
        tails: Tails | None = None,
        outputs: Outputs | None = None,
        since: datetime | None = None,
    ) -> None:
        """`task` as stored (the FULL view): what it shows is not written again. `since`: when the
        recorder itself started, in the Pod (the task's start when it sees it begun)."""
        self.store = store
        self.task = task
        self._now = now
        self._since = since
        self._tails = tails
        self._outputs = outputs
        attempt = task.logs[-1] if task.logs else None
        ended = len(attempt.logs) if attempt else 0  # executors end in order: a prefix
        self.state = task.state
        """The task's state as this recorder last wrote or read it."""
        self._started = set(range(ended))
        self._ended = set(range(ended))
        self._outputs_written = bool(attempt and attempt.outputs)
        # What the changes being prepared will have written, once their transaction commits: a
        # write that fails (the database restarting) is prepared again on the next pass.
        self._pending_started: set[int] = set()
        self._pending_ended: set[int] = set()
        self._pending_outputs = False
        self.transactions = 0
        """Transactions written (for tests and benchmarks)."""

    async def _steps(self, events: list[lifecycle.Event], changes: list[Change], planned: State) -> State:
        """The executors' starts and ends and the states on the way, as far as the events show them
        and the task does not yet."""
        for event in events:
            match event:
                case lifecycle.StagingStarted() if planned is State.QUEUED:
                    # The recorder starts before every other container of the Pod: the task's
                    # start is then no later than any executor's.
                    at = self._now() if self._since is None else min(self._since, self._now())
                    changes.append(Moved(target=State.INITIALIZING, at=at))
                    planned = State.INITIALIZING
                case lifecycle.ExecutorStarted(index=index, at=at):
                    if planned in (State.QUEUED, State.INITIALIZING):
                        # The container status has whole seconds: never before the recorder began.
                        began = _moment(at) if self._since is None else max(_moment(at), self._since)
                        changes.append(Moved(target=State.RUNNING, at=began))
                        planned = State.RUNNING
                    if index not in self._started | self._pending_started:
                        changes.append(ExecutorRan(index=index, start_time=_moment(at)))
                        self._pending_started.add(index)
                case lifecycle.ExecutorExited(index=index, exit_code=code, at=at, started=began) if (
                    index not in self._ended | self._pending_ended
                ):
                    out, err = await self._tails(index) if self._tails is not None else (None, None)
                    changes.append(
                        ExecutorRan(
                            index=index,
                            start_time=_moment(began) if began else None,
                            end_time=_moment(at),
                            exit_code=code,
                            stdout=out,
                            stderr=err,
                        )
                    )
                    self._pending_ended.add(index)
        return planned

    async def _write(self, changes: list[Change]) -> Applied | None:
        try:
            if not changes:
                return None
            applied = await self.store.apply(self.task.id, changes)
            self._started |= self._pending_started
            self._ended |= self._pending_ended
            self._outputs_written = self._outputs_written or self._pending_outputs
        finally:
            self._pending_started, self._pending_ended, self._pending_outputs = set(), set(), False
        self.transactions += 1
        self.state = applied.state
        return applied

    async def record(self, pod: dict[str, Any]) -> bool:
        """The recorder's pass over one Pod status: the steps, a filer's failure, the output logs
        and, once the Pod shows it, the task's end. True once the task's end is in the store."""
        if is_terminal(self.state):
            return True
        self._pending_started, self._pending_ended, self._pending_outputs = set(), set(), False
        changes: list[Change] = []
        events = observe.events(self.task, pod)
        await self._steps(events, changes, self.state)
        now = self._now()
        progress = observe.fold(self.task, events, delivers=observe.goes_on(pod))
        # In the order they happened; the store skips a move the state has gone past.
        for event in events:
            match event:
                case lifecycle.OutputsUploaded() if not self._outputs_written:
                    files = await self._outputs() if self._outputs is not None else []
                    changes.append(OutputsRecorded(files=files))
                    self._pending_outputs = True
                case lifecycle.SystemFailure(reason=reason):
                    # A failed upload after an executor error leaves the executor's error (the fold
                    # says so, and why); any other failure is the system's.
                    if progress.state is State.EXECUTOR_ERROR and progress.system_logs:
                        changes.append(Moved(target=progress.state, at=now, reason=progress.system_logs[-1]))
                    else:
                        changes.append(Moved(target=State.SYSTEM_ERROR, at=now, reason=reason))
        override = diagnose.overriding(self.task, pod)
        if override is not None:
            changes.append(
                Moved(
                    target=override.state,
                    at=now,
                    reason=override.line,
                    metadata={"termination_reason": override.reason},
                )
            )
        elif is_terminal(progress.state):
            changes.append(Moved(target=progress.state, at=now))
        await self._write(changes)
        if is_terminal(self.state):
            return True
        # Ended by someone else (a cancel, the controller): nothing more to record.
        self.state = await self.store.state(self.task.id)
        return is_terminal(self.state)

    async def record_end(self, steps: list[lifecycle.Event], end: Moved) -> bool:
        """The controller's write of a diagnosed end: the steps the Pod shows (`TaskObjects.steps`)
        first, then `end`, in one transaction. True if this call moved the task to `end.target`."""
        self._pending_started, self._pending_ended, self._pending_outputs = set(), set(), False
        changes: list[Change] = []
        await self._steps(steps, changes, self.state)
        changes.append(end)
        applied = await self._write(changes)
        return applied is not None and end.target in applied.moved
