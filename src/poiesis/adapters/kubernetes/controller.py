"""The Task Controller's reconciler: the backstop that brings every task to a true terminal state.

The recorder in each Pod writes every state as it happens; this covers what it cannot: a Pod that
ended or vanished with no terminal state written (recorder killed, node lost, Pod evicted), a Pod
that cannot start, a QUEUED task whose Job was never created (the API died after the commit, or the
cluster was unreachable), a CANCELING task whose objects remain, and objects of tasks the database
does not know.

A pass reconciles one task id from the database and the cluster as they are now (level-triggered):
a second pass changes nothing, a missed event costs latency, never correctness. The work queue
holds each id once and gives it to one worker at a time; different tasks run in parallel.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Hashable
from datetime import datetime
from typing import TYPE_CHECKING

import msgspec

from poiesis.adapters.clock import SystemClock
from poiesis.adapters.kubernetes.recording import PodRecorder
from poiesis.adapters.kubernetes.release import FairReleaser
from poiesis.domain.errors import TaskNotFound
from poiesis.domain.fairness import Caps
from poiesis.domain.states import State, is_terminal
from poiesis.domain.tes import Task, View
from poiesis.domain.times import parse_time
from poiesis.ports.clock import Clock
from poiesis.ports.cluster import ClusterRefused, ClusterUnavailable
from poiesis.ports.store import Moved, StoreUnavailable, TaskStore
from poiesis.ports.taskobjects import Stuck, TaskObjects, Verdict

if TYPE_CHECKING:
    from poiesis.adapters.metrics import ControllerMetrics

ACTIONS_KEPT = 1000

log = logging.getLogger("poiesis.tctl")

NON_TERMINAL = [State.QUEUED, State.INITIALIZING, State.RUNNING, State.CANCELING]


class ControllerSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    lease_name: str = "poiesis-tctl"
    lease_seconds: float = 15.0
    """Another replica takes over this long after the leader stops renewing."""
    renew_deadline_seconds: float = 10.0
    """The leader stops acting when it could not renew for this long."""
    retry_seconds: float = 2.0
    workers: int = 8
    """Tasks reconciled at once."""
    resync_seconds: float = 60.0
    """Every non-terminal task is reconciled at least this often, events or not."""
    ended_grace_seconds: float = 10.0
    """How long after its Pod ended a task's recorder is given to record the end itself."""
    queued_grace_seconds: float = 30.0
    """How old a QUEUED task with no Job must be before the controller creates the Job."""
    start_timeout_seconds: float = 600.0
    """How long a Pod may be unable to start (image not pulled, a container not created) before
    the task fails as SYSTEM_ERROR and its Job is removed."""
    unschedulable_timeout_seconds: float | None = None
    """How long a Pod no node fits may wait (busy GPUs free up as other tasks end); 0 waits for
    ever. Unset: `start_timeout_seconds`. Either way the scheduler's reason is in `system_logs`."""
    delete_orphans: bool = True
    """Remove Jobs and Pods labelled for a task the database does not know."""
    release_seconds: float = 1.0
    """With caps on the tasks in flight: how often the held tasks are looked at besides when a
    task's Pod ends (how long at most a new task waits for a free slot)."""


NOTE_AFTER_SECONDS = 5.0
"""How long a Pod must have been unable to start before what it waits for goes to system_logs."""


class Requeue(msgspec.Struct, frozen=True):
    """A pass's decision to look at the task again after `seconds` (0: as soon as a worker is free)."""

    seconds: float


Decision = Requeue | None
"""What a pass decided: look again later, or nothing more until the next event or resync (None)."""


class WorkQueue:
    """Ids to reconcile: each held once, each handed to one worker at a time. An id added while a
    worker has it is handed out again when that worker is done."""

    def __init__(self) -> None:
        self._ready: asyncio.Queue[Hashable] = asyncio.Queue()
        self._queued: set[Hashable] = set()
        self._active: set[Hashable] = set()
        self._again: set[Hashable] = set()

    def __len__(self) -> int:
        return len(self._queued)

    def add(self, key: Hashable) -> None:
        if key in self._active:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._ready.put_nowait(key)

    def add_after(self, key: Hashable, seconds: float) -> None:
        asyncio.get_running_loop().call_later(max(0.0, seconds), self.add, key)

    async def get(self) -> Hashable:
        key = await self._ready.get()
        self._queued.discard(key)
        self._active.add(key)
        return key

    def done(self, key: Hashable) -> None:
        self._active.discard(key)
        if key in self._again:
            self._again.discard(key)
            self.add(key)


class Controller:
    def _now(self) -> datetime:
        return self._clock.now()

    def _monotonic(self) -> float:
        return self._clock.monotonic()

    def __init__(
        self,
        store: TaskStore,
        objects: TaskObjects,
        settings: ControllerSettings,
        *,
        clock: Clock | None = None,
        metrics: ControllerMetrics | None = None,
        caps: Caps | None = None,
    ) -> None:
        self.store = store
        self.objects = objects
        self.settings = settings
        self.queue = WorkQueue()
        if metrics is None:
            # Imported here: the settings import this module, and every process reads the settings.
            from poiesis.adapters.metrics import ControllerMetrics

            metrics = ControllerMetrics()
        self.metrics = metrics
        self.metrics.queue_depth.set_function(lambda: len(self.queue))
        self._clock = clock or SystemClock()
        self._ended_seen: dict[str, float] = {}
        self._stuck_seen: dict[str, float] = {}
        self._noted: set[str] = set()
        """Tasks whose wait to start is in their system_logs already."""
        self._closed: set[str] = set()
        """Tasks the cluster still holds objects for (a finished Job waits out its TTL) that a pass
        found terminal: a terminal state is final, so the orphan sweep need not look at them again.
        Kept only while the cluster shows them (each resync drops the rest)."""
        self.releaser: FairReleaser | None = None
        """With caps on the tasks in flight: what lets held tasks into the cluster."""
        if caps is not None and caps.any:
            self.releaser = FairReleaser(
                store,
                objects,
                caps,
                self._clock,
                interval=settings.release_seconds,
                refused=self._refused,
                on_release=lambda task_id: self._act(task_id, "released: a slot is free", "released"),
            )
            releaser = self.releaser
            self.metrics.held.set_function(lambda: releaser.held)
        self.actions: list[tuple[str, str]] = []
        """(task id, action) in the order taken, the latest ACTIONS_KEPT of them (the metrics count
        them all), for tests and benchmarks."""

    # One pass

    async def reconcile(self, task_id: str) -> Decision:
        # The state alone decides most passes (a resync visits every open task, and most of them
        # are running well): the whole task is read only when the pass acts on it.
        try:
            task = await self.store.get(task_id, view=View.MINIMAL)
        except TaskNotFound:
            return await self._orphan(task_id)
        if is_terminal(task.state):
            if self.objects.pod(task_id) is not None:  # it ran here: time its states, once
                await self.metrics.state_times.observe(self.store, task_id)
            self._settled(task_id)
            if self.settings.delete_orphans:
                self._closed.add(task_id)
            return None
        if task.state is State.CANCELING:
            return await self._finish_cancel(task)
        seen = self.objects.pod(task_id)
        if seen is not None:
            if seen.deleted or seen.ended:
                return await self._pod_ended(await self.store.get(task_id, view=View.FULL), seen.deleted)
            self._ended_seen.pop(task_id, None)
            return await self._pod_cannot_start(task, seen.stuck)
        if task.state is State.QUEUED:
            return await self._queued_without_pod(await self.store.get(task_id, view=View.FULL))
        # INITIALIZING or RUNNING, and no Pod in the cache: ask the API itself.
        job = await self.objects.job(task_id)
        if job is None:
            await self._write(
                task,
                Verdict(
                    State.SYSTEM_ERROR,
                    "Gone",
                    "the task's Job and Pod are gone and nothing recorded the task's end",
                ),
            )
        elif job.failed is not None:
            await self._write(task, job.failed)
        return None

    async def _pod_ended(self, task: Task, deleted: bool) -> Decision:
        if is_terminal(task.state):  # written since the state was read
            self._settled(task.id)
            return None
        verdict = self.objects.end_of(task)
        if verdict is None:
            self._ended_seen.pop(task.id, None)
            return None
        # The recorder writes the end itself as the Pod ends; give it time before writing for it.
        first = self._ended_seen.setdefault(task.id, self._monotonic())
        wait = self.settings.ended_grace_seconds - (self._monotonic() - first)
        if wait > 0 and not deleted:
            return Requeue(wait)
        # The steps the Pod shows and the task does not, then the end, in one transaction.
        recorder = PodRecorder(self.store, task, self._now)
        if await recorder.record_end(self.objects.steps(task), self._end(verdict)):
            await self._ended(task, verdict)
        self._settled(task.id)
        return None

    async def _pod_cannot_start(self, task: Task, found: Stuck | None) -> Decision:
        if found is None:
            self._stuck_seen.pop(task.id, None)
            self._noted.discard(task.id)
            return None
        first = self._stuck_seen.setdefault(task.id, self._monotonic())
        stuck_for = self._monotonic() - first
        passing = "persistentvolumeclaim" in found.line.lower()  # a claim on its way to be bound
        if not found.final and not passing and task.id not in self._noted and stuck_for >= NOTE_AFTER_SECONDS:
            # What the task waits for, in its FULL view while it waits (once per controller); not
            # what passes by itself (a claim being made and bound; the timeout still holds).
            self._noted.add(task.id)
            await self.store.append_system_log(task.id, f"waiting: {found.line}")
        note_in = NOTE_AFTER_SECONDS - stuck_for if task.id not in self._noted and not passing else math.inf
        timeout = self.settings.start_timeout_seconds
        if found.reason == "Unschedulable" and self.settings.unschedulable_timeout_seconds is not None:
            timeout = self.settings.unschedulable_timeout_seconds
            if timeout == 0 and not found.final:
                return Requeue(max(0.0, min(self.settings.resync_seconds, note_in)))
        wait = timeout - stuck_for
        if wait > 0 and not found.final:
            return Requeue(max(0.0, min(wait, self.settings.resync_seconds, note_in)))
        waited = "" if found.final else f" (for {timeout:g} s)"
        line = f"{found.line}{waited}; the task's Job was removed"
        await self.objects.remove(task.id)
        await self._write(task, Verdict(State.SYSTEM_ERROR, found.reason, line))
        return None

    async def _queued_without_pod(self, task: Task) -> Decision:
        if task.state is not State.QUEUED:  # moved on since the state was read: look again
            return Requeue(0.0)
        if self.releaser is not None and not self.releaser.released(task.id):
            return None  # held: the releaser makes its objects when a slot is free
        now = self._now()
        created = parse_time(task.creation_time) if task.creation_time else now
        age = (now - created).total_seconds()
        if age < self.settings.queued_grace_seconds:
            return Requeue(self.settings.queued_grace_seconds - age)
        job = await self.objects.job(task.id)
        if job is not None:
            if job.failed is not None:
                await self._write(task, job.failed)
                return None
            if job.held:
                return await self._admission_awaited(task)
            if not job.needs_release:
                return None  # its Pod is on the way
        try:
            await self.objects.submit(task)
        except ClusterRefused as exc:
            await self._write(task, Verdict(State.SYSTEM_ERROR, "Refused", str(exc)))
            return None
        what = "created the missing Job" if job is None else "released the Job left suspended"
        self._act(task.id, what, "job_created" if job is None else "job_released")
        await self.objects.event(task.id, "JobSubmitted", f"the Task Controller {what}", warning=False)
        return None

    async def _admission_awaited(self, task: Task) -> Decision:
        """Kueue holds the task's Job: say why in its system_logs (once per controller), and look
        again at each resync (the Job's admission comes as its Pod)."""
        if task.id not in self._noted:
            self._noted.add(task.id)
            await self.store.append_system_log(task.id, f"waiting: {await self.objects.admission(task.id)}")
        return None

    async def _finish_cancel(self, task: Task) -> Decision:
        if not await self.objects.remove(task.id):
            return Requeue(2.0)
        if await self.store.transition(task.id, State.CANCELED, now=self._now()):
            await self.metrics.state_times.observe(self.store, task.id)
            self._act(task.id, "CANCELED: the task's objects are gone", "canceled")
        self._settled(task.id)
        return None

    async def _orphan(self, task_id: str) -> Decision:
        if not self.settings.delete_orphans:
            return None
        if self.objects.pod(task_id) is None and await self.objects.job(task_id) is None:
            return None
        if not await self.objects.remove(task_id):
            return Requeue(2.0)
        self._act(task_id, "removed the objects of a task the database does not know", "orphan_removed")
        self.objects.forget(task_id)
        return None

    async def _refused(self, task_id: str, line: str) -> None:
        await self._write(
            await self.store.get(task_id, view=View.MINIMAL), Verdict(State.SYSTEM_ERROR, "Refused", line)
        )

    # Writes

    def _end(self, verdict: Verdict) -> Moved:
        return Moved(
            target=verdict.state,
            at=self._now(),
            reason=verdict.line,
            metadata={"termination_reason": verdict.reason},
        )

    async def _write(self, task: Task, verdict: Verdict) -> None:
        if (await self.store.apply(task.id, [self._end(verdict)])).moved:
            await self._ended(task, verdict)
        self._settled(task.id)

    async def _ended(self, task: Task, verdict: Verdict) -> None:
        """This controller wrote the task's end: time its states, count it, tell the cluster."""
        await self.metrics.state_times.observe(self.store, task.id, creation_time=task.creation_time or None)
        self._act(
            task.id,
            f"{verdict.state.value} ({verdict.reason}): {verdict.line}",
            f"ended_{verdict.state.value.lower()}",
        )
        await self.objects.event(
            task.id,
            f"Task{verdict.state.value.title().replace('_', '')}",
            verdict.line,
            warning=verdict.state is not State.COMPLETE,
        )

    def _act(self, task_id: str, action: str, kind: str) -> None:
        self.actions.append((task_id, action))
        if len(self.actions) > ACTIONS_KEPT:
            del self.actions[: len(self.actions) - ACTIONS_KEPT]
        self.metrics.actions.labels(kind).inc()
        log.info("task %s: %s", task_id, action)

    def _settled(self, task_id: str) -> None:
        self._ended_seen.pop(task_id, None)
        self._stuck_seen.pop(task_id, None)
        self._noted.discard(task_id)
        self.objects.forget(task_id)

    # Running

    def notice(self, task_id: str) -> None:
        """A task's Pod changed in a way worth a pass (and, under caps, a slot may be free)."""
        self.queue.add(task_id)
        if self.releaser is not None:
            self.releaser.wake()

    async def worker(self) -> None:
        while True:
            task_id = str(await self.queue.get())
            started = time.perf_counter()
            outcome = "ok"
            try:
                decision = await self.reconcile(task_id)
                if decision is not None:
                    self.queue.add_after(task_id, decision.seconds)
            except (ClusterUnavailable, StoreUnavailable) as exc:
                outcome = "retry"
                cause = "kubernetes" if isinstance(exc, ClusterUnavailable) else "database"
                self.metrics.errors.labels(cause).inc()
                log.warning("task %s: will retry: %s", task_id, exc)
                self.queue.add_after(task_id, 2.0)
            except asyncio.CancelledError:
                outcome = "cancelled"
                raise
            except Exception:
                outcome = "error"
                self.metrics.errors.labels("unexpected").inc()
                log.exception("task %s: reconciling failed; will retry", task_id)
                self.queue.add_after(task_id, 5.0)
            finally:
                self.queue.done(task_id)
                if outcome != "cancelled":
                    self.metrics.passes.labels(outcome).observe(time.perf_counter() - started)

    def _watched(self, task_id: str) -> bool:
        """Whether the watch shows the task's Pod running well: its next change comes as an event,
        so a resync has nothing to look at."""
        seen = self.objects.pod(task_id)
        return seen is not None and not (seen.deleted or seen.ended or seen.stuck)

    async def resync(self) -> None:
        """Queue, now and every `resync_seconds`, every non-terminal task whose Pod the watch does
        not show running well (a task being cancelled always), and every task the cluster holds
        objects for that the database does not show open and no pass has found terminal (an
        orphan, or a task not looked at since it ended). Its cost follows what needs looking at, not
        the tasks in flight or the finished Jobs waiting out their TTL: two reads of ids, and a pass
        only for those."""
        while True:
            try:
                await self._resync_once()
            except Exception:  # the backstop's own loop must outlive any one failure
                log.exception("resync failed")
            await asyncio.sleep(self.settings.resync_seconds)

    async def _resync_once(self) -> None:
        try:
            open_ids = set(await self.store.ids_in_states(NON_TERMINAL))
            canceling = set(await self.store.ids_in_states([State.CANCELING]))
        except StoreUnavailable as exc:
            # Every pass starts with a read of the database: nothing to do until it is back.
            log.warning("resync: the database is unavailable: %s", exc)
            return
        ids = {i for i in open_ids if i in canceling or not self._watched(i)}
        if self.settings.delete_orphans:
            try:
                known = await self.objects.known()
            except (ClusterUnavailable, ClusterRefused) as exc:
                log.warning("resync: listing the task Jobs failed: %s", exc)
            else:
                self._closed &= known
                ids.update(known - open_ids - self._closed)
        for task_id in sorted(ids):
            self.queue.add(task_id)

    async def run(self) -> None:
        """Act until cancelled (leadership lost): the workers and the resync."""
        self.metrics.leader.set(1)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.resync())
                if self.releaser is not None:
                    group.create_task(self.releaser.run())
                for _ in range(self.settings.workers):
                    group.create_task(self.worker())
        finally:
            self.metrics.leader.set(0)
