"""What a TaskPod's status says about its task, as lifecycle events (pure: a Pod as a JSON dict).

The status of every init container stays in the Pod, so the whole history can be read again from
any one status: a restarted recorder derives the same events, and the writes they cause are
idempotent. The launcher puts an executor's real exit code in its termination message
(`exit_code=N`); that wins over the container's own exit code (0 under `ignore_error`, and 0 for a
failure in a task with outputs, so that the Pod goes on to upload them). An executor skipped after
another failed shows `skipped` as its message, and is not one that ran.
"""

from __future__ import annotations

from typing import Any

import msgspec

from poiesis.adapters.kubernetes.taskpod import (
    EXIT_CODE_MESSAGE,
    SKIPPED,
    STAGE_IN,
    STAGE_OUT,
    executor_container,
    executor_index,
)
from poiesis.domain import lifecycle
from poiesis.domain.tes import Task


class ContainerSeen(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    started: str | None = None
    finished: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None
    container_exit_code: int | None = None
    """The container's own exit code (the launcher's: 0 when it let the Pod go on)."""


def _seen(status: dict[str, Any]) -> ContainerSeen:
    state = status.get("state") or {}
    if "running" in state:
        return ContainerSeen(name=status["name"], started=(state["running"] or {}).get("startedAt"))
    if "terminated" in state:
        t = state["terminated"] or {}
        message = (t.get("message") or "").strip() or None
        code = t.get("exitCode")
        started, finished = t.get("startedAt") or t.get("finishedAt"), t.get("finishedAt")
        match = EXIT_CODE_MESSAGE.match(message or "")
        if match:
            code = int(match.group(1))
            started, finished = match.group(2) or started, match.group(3) or finished
        return ContainerSeen(
            name=status["name"],
            started=started,
            finished=finished,
            exit_code=code,
            reason=t.get("reason"),
            message=message,
            container_exit_code=t.get("exitCode"),
        )
    return ContainerSeen(name=status["name"])


def containers(pod: dict[str, Any]) -> dict[str, ContainerSeen]:
    statuses = (pod.get("status") or {}).get("initContainerStatuses") or []
    return {s["name"]: _seen(s) for s in statuses}


def _filer_failure(seen: ContainerSeen, what: str) -> str:
    if seen.message and not EXIT_CODE_MESSAGE.match(seen.message):
        return seen.message
    reason = seen.reason or "Error"
    return f"{what} failed: container exited with {seen.exit_code} ({reason})"


def events(task: Task, pod: dict[str, Any]) -> list[lifecycle.Event]:
    """The events the Pod's status shows so far, in the order they happened."""
    seen = containers(pod)
    found: list[lifecycle.Event] = []
    tif = seen.get(STAGE_IN)
    first = seen.get(executor_container(0))
    if (tif and (tif.started or tif.finished)) or (first and first.started):
        found.append(lifecycle.StagingStarted())
    if tif and tif.finished and tif.exit_code not in (0, None):
        found.append(lifecycle.SystemFailure(_filer_failure(tif, "staging the inputs")))
        return found
    failed = False
    for index in range(len(task.executors)):
        executor = seen.get(executor_container(index))
        if executor is None or not executor.started:
            break
        if (executor.message or "").startswith(SKIPPED):
            if not failed:  # the mark was written by an executor that did not fail: its own doing
                found.append(lifecycle.SystemFailure(f"executor {index} was skipped, yet no executor failed"))
                return found
            break
        found.append(lifecycle.ExecutorStarted(index, executor.started))
        if executor.finished is None or executor.exit_code is None:
            break
        found.append(lifecycle.ExecutorExited(index, executor.exit_code, executor.finished, executor.started))
        failed = failed or (executor.exit_code != 0 and not task.executors[index].ignore_error)
    tof = seen.get(STAGE_OUT)
    if tof and tof.finished:
        if tof.exit_code == 0:
            found.append(lifecycle.OutputsUploaded())
        else:
            found.append(lifecycle.SystemFailure(_filer_failure(tof, "uploading the outputs")))
    return found


def progress(task: Task, pod: dict[str, Any]) -> lifecycle.Progress:
    return fold(task, events(task, pod), delivers=goes_on(pod))


def goes_on(pod: dict[str, Any]) -> bool:
    """Whether the Pod goes on to upload the outputs after an executor failed: its launcher left
    the failed mark and exited 0. An executor container that exited non-zero (killed, or a Pod
    made without the mark) stopped the Pod there."""
    return not any(
        executor_index(name) is not None and seen.container_exit_code not in (0, None)
        for name, seen in containers(pod).items()
    )


def fold(task: Task, seen: list[lifecycle.Event], *, delivers: bool) -> lifecycle.Progress:
    """The task's progress after `seen` (events as `events` derives them); `delivers`: the Pod
    uploads the outputs after an executor failed (`goes_on`), so the task ends after `tof`."""
    result = lifecycle.Progress(deliver_after_failure=delivers)
    for event in seen:
        result = lifecycle.apply(task.executors, bool(task.outputs), result, event)
    return result
