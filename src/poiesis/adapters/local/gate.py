"""FairGate: the local backend's slots for tasks in flight, given out in fair order.

A task waits at the gate (QUEUED) until `domain.fairness.release_order` lets it in: while neither
the per-owner cap nor the total is reached, the owner with the fewest tasks in flight first, the
oldest task (smallest id) first within an owner. A task cancelled while it waits leaves at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator

from poiesis.domain.fairness import Caps, release_order


class FairGate:
    def __init__(self, caps: Caps) -> None:
        self.caps = caps
        self._active: Counter[str] = Counter()
        self._waiting: dict[str, tuple[str, asyncio.Future[None]]] = {}

    @property
    def in_flight(self) -> int:
        return sum(self._active.values())

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def active(self, owner: str) -> int:
        return self._active[owner]

    @contextlib.asynccontextmanager
    async def slot(self, task_id: str, owner: str) -> AsyncIterator[None]:
        """Hold a slot for `task_id` of `owner` while the block runs."""
        admitted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[task_id] = (owner, admitted)
        self._release()
        try:
            await admitted
        except asyncio.CancelledError:
            if admitted.done() and not admitted.cancelled():
                self._leave(owner)  # let in, and cancelled before it went on
            else:
                self._waiting.pop(task_id, None)
                self._release()
            raise
        try:
            yield
        finally:
            self._leave(owner)

    def _leave(self, owner: str) -> None:
        self._active[owner] -= 1
        if self._active[owner] <= 0:
            del self._active[owner]
        self._release()

    def _release(self) -> None:
        waiting = sorted((task_id, owner) for task_id, (owner, _) in self._waiting.items())
        for task_id in release_order(self._active, waiting, self.caps):
            owner, admitted = self._waiting.pop(task_id)
            self._active[owner] += 1
            admitted.set_result(None)
