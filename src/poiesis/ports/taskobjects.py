"""TaskObjects: what the Task Controller needs to know of a task's objects in the cluster, in the
domain's terms (the Kubernetes adapter reads its Pods and Jobs; the controller never sees one).

- `pod(task_id)`: whether the task's Pod (as last seen) ran to its end or was deleted, and whether
  it cannot start; None when the cluster shows no Pod of the task.
- `end_of(task)` and `steps(task)`: what that Pod's status says of the task: the end to write when
  the recorder did not (None: nothing to write), and the lifecycle events it shows so far.
- `job(task_id)`: whether the task's Job failed without a Pod to show why, and whether it still
  waits to be released (by Poiesis, or by Kueue: `admission` says why it waits); None when there is
  no Job.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from poiesis.domain.lifecycle import Event
from poiesis.domain.states import State
from poiesis.domain.tes import Task


class Verdict(msgspec.Struct, frozen=True):
    """A task's end as the cluster shows it: the state, a reason word and the `system_logs` line."""

    state: State
    reason: str
    line: str


class Stuck(msgspec.Struct, frozen=True):
    """Why a task's Pod cannot start (an image that cannot be pulled, no node that fits)."""

    reason: str
    line: str
    final: bool = False
    """Kubernetes's words say waiting cannot help (the image does not exist, access to it was
    denied, a root image under `restricted`): the task ends now, not after the start timeout."""


class PodSeen(msgspec.Struct, frozen=True, kw_only=True):
    deleted: bool
    """The Pod was deleted: this was its last status."""
    ended: bool
    """Its containers have all ended (or it failed as a whole)."""
    stuck: Stuck | None = None


class JobSeen(msgspec.Struct, frozen=True, kw_only=True):
    failed: Verdict | None = None
    """The Job failed without a Pod to show why (e.g. its deadline passed before one started)."""
    needs_release: bool = False
    """Still suspended, and no admission controller (Kueue) will release it."""
    held: bool = False
    """Still suspended, waiting for the admission controller (Kueue) to admit it."""


class TaskObjects(Protocol):
    def pod(self, task_id: str) -> PodSeen | None: ...

    def end_of(self, task: Task) -> Verdict | None: ...

    def steps(self, task: Task) -> list[Event]: ...

    def forget(self, task_id: str) -> None:
        """Drop what is kept of a deleted Pod once its task is settled."""
        ...

    async def job(self, task_id: str) -> JobSeen | None: ...

    async def admission(self, task_id: str) -> str:
        """Why the admission controller (Kueue) holds the task's Job, in its own words."""
        ...

    async def known(self) -> set[str]:
        """Every task id the cluster holds a Job or Pod for."""
        ...

    async def submit(self, task: Task) -> None: ...

    async def release(self, task: Task) -> None:
        """Make the task's objects and let its Pod start (a task held by the caps on tasks in
        flight); idempotent."""
        ...

    async def remove(self, task_id: str) -> bool:
        """Delete the task's objects; True once no Pod of the task is left."""
        ...

    async def event(self, task_id: str, reason: str, message: str, *, warning: bool) -> None:
        """An event on the task's objects for the cluster's users (best effort)."""
        ...
