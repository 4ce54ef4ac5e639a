"""UnattachedCluster: the Cluster of a service that runs no tasks.

With no backend configured, an accepted task stays QUEUED: nothing pretends to run it. Cancelling
one has nothing to remove, so it completes at once.
"""

from __future__ import annotations

from poiesis.domain.tes import Task


class UnattachedCluster:
    name = "none"

    async def submit(self, task: Task) -> None:
        return None

    async def cancel(self, task_id: str) -> bool:
        return True
