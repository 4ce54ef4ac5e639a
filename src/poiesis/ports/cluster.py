"""Cluster: where a task's plan runs.

Contract, for every adapter:
- `submit` starts the task (stage in, executors in order, stage out) and returns once the cluster
  has accepted it; it is idempotent, so a retry after a crash never runs a task twice. Progress is
  reported through the TaskStore, by the backend's own writers. Raises `ClusterUnavailable` when the
  cluster cannot be reached: the task stays QUEUED and is submitted again later; `ClusterRefused`
  when the cluster will never take it as it is (its message says why, for `system_logs`).
- `cancel` stops the task and removes what the cluster holds for it. It returns True once nothing of
  the task is left (an unknown task counts as removed), False while removal is still under way.
"""

from __future__ import annotations

from typing import Protocol

from poiesis.domain.errors import PoiesisError, Unavailable
from poiesis.domain.tes import Task


class ClusterUnavailable(Unavailable):
    """The cluster could not be reached or refused the request for a reason that may pass."""


class ClusterRefused(PoiesisError):
    """The cluster refused the task for a reason that will not pass (an invalid object, a quota)."""


class Cluster(Protocol):
    name: str

    async def submit(self, task: Task) -> None: ...

    async def cancel(self, task_id: str) -> bool: ...
