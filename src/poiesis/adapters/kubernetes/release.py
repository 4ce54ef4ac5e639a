"""FairReleaser: with caps on the tasks in flight, the one place a held task is let into the cluster.

With `max_active_tasks_per_user` or `max_active_tasks` set, the API stores a task and makes nothing
in the cluster: the task is held, QUEUED. The Task Controller's leader runs this loop, alone (so
the caps hold at every instant, whatever the number of API replicas): each pass reads the open
tasks and their owners from the store, counts as in flight every open task that is past QUEUED, has
a Pod, or was released and has no Pod yet, and releases the held ones `domain.fairness` chooses
(making the task's objects; `TaskObjects.release`). A pass runs when woken (a task Pod ended or
went, so a slot may be free) and every `interval` seconds (new tasks).

A task held for a few seconds gets a `system_logs` line saying why it waits (once; again after a
leader change). A task cancelled while held has nothing in the cluster: its cancel is at once. One
cancelled while it is being released is looked at again once its objects are made, and they are
removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable

from poiesis.domain.fairness import Caps, held_note, release_order
from poiesis.domain.states import State, is_terminal
from poiesis.domain.tes import View
from poiesis.ports.clock import Clock
from poiesis.ports.cluster import ClusterRefused
from poiesis.ports.store import TaskStore
from poiesis.ports.taskobjects import TaskObjects

log = logging.getLogger("poiesis.tctl.release")

NOTE_AFTER_SECONDS = 5.0
"""How long a task must have been held before its system_logs say why."""
NOTES_PER_PASS = 200


class FairReleaser:
    def __init__(
        self,
        store: TaskStore,
        objects: TaskObjects,
        caps: Caps,
        clock: Clock,
        *,
        interval: float = 1.0,
        refused: Callable[[str, str], Awaitable[None]] | None = None,
        on_release: Callable[[str], None] | None = None,
    ) -> None:
        self._store = store
        self._objects = objects
        self.caps = caps
        self._clock = clock
        self._interval = interval
        self._refused = refused
        """Called with a task id and Kubernetes's words when the cluster refused the task's objects."""
        self._on_release = on_release
        self._wake = asyncio.Event()
        self._released: set[str] = set()
        """Tasks released by this process whose Pod the cluster does not show yet."""
        self._first_held: dict[str, float] = {}
        """When this process first saw each task held (monotonic seconds)."""
        self._noted: set[str] = set()
        """Held tasks whose system_logs say why they wait."""
        self.held = 0
        """Tasks waiting for a slot, as the last pass counted them."""
        self.in_flight = 0

    def released(self, task_id: str) -> bool:
        """Whether this process released the task and its Pod is not shown yet."""
        return task_id in self._released

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
            self._wake.clear()
            try:
                await self.pass_once()
            except Exception as exc:  # noqa: BLE001 - the next pass reads everything again
                log.warning("releasing held tasks failed; the next pass retries: %s", exc)

    async def pass_once(self) -> list[str]:
        """Release what the caps allow now; the ids released."""
        open_tasks = await self._store.open_tasks()
        still: set[str] = set()
        active: Counter[str] = Counter()
        waiting: list[tuple[str, str]] = []
        for task in open_tasks:
            pod = self._objects.pod(task.id)
            if task.id in self._released and pod is None:
                still.add(task.id)
            if task.state is State.QUEUED and pod is None and task.id not in self._released:
                waiting.append((task.id, task.owner))
            else:
                active[task.owner] += 1
        self._released = still
        self.held, self.in_flight = len(waiting), sum(active.values())
        chosen = release_order(active, waiting, self.caps)
        for task_id in chosen:
            await self._release(task_id)
        self.held -= len(chosen)
        self.in_flight += len(chosen)
        let_in = set(chosen)
        await self._note([task_id for task_id, _ in waiting if task_id not in let_in])
        return chosen

    async def _note(self, held: list[str]) -> None:
        """Say why in the system_logs of each task held for `NOTE_AFTER_SECONDS`, once, at most
        `NOTES_PER_PASS` a pass (oldest first), after the releases."""
        now = self._clock.monotonic()
        self._first_held = {t: self._first_held.get(t, now) for t in held}
        self._noted &= set(held)
        due = [t for t in held if t not in self._noted and now - self._first_held[t] >= NOTE_AFTER_SECONDS]
        for task_id in due[:NOTES_PER_PASS]:
            await self._store.append_system_log(task_id, held_note(self.caps))
            self._noted.add(task_id)

    async def _release(self, task_id: str) -> None:
        task = await self._store.get(task_id, view=View.FULL)
        if task.state is not State.QUEUED:
            return
        self._released.add(task_id)  # in flight from now: a pass under way counts it
        try:
            await self._objects.release(task)
        except ClusterRefused as exc:
            self._released.discard(task_id)
            if self._refused is not None:
                await self._refused(task_id, str(exc))
            return
        except BaseException:
            self._released.discard(task_id)  # held still; the next pass tries again
            raise
        if self._on_release is not None:
            self._on_release(task_id)
        state = await self._store.state(task_id)
        if state is State.CANCELING or is_terminal(state):
            # Cancelled while it was being released: what was made is removed again.
            await self._objects.remove(task_id)
