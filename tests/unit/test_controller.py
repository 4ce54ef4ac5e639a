"""The Task Controller's passes against the in-memory FakeTaskStore (which passes the store contract
suite, tests/contracts/store.py) and a fake cluster."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
import pytest

from poiesis.adapters.kubernetes import diagnose, observe
from poiesis.adapters.kubernetes.controller import Controller, ControllerSettings, Requeue, WorkQueue
from poiesis.domain import lifecycle
from poiesis.domain.fairness import Caps
from poiesis.domain.states import State
from poiesis.domain.tes import Task, View
from poiesis.ports.cluster import ClusterRefused
from poiesis.ports.store import Applied, Change, ExecutorRan, Moved, StoreUnavailable, TaskStore
from poiesis.ports.taskobjects import JobSeen, PodSeen, Verdict
from tests.builders import make_task
from tests.conftest import FakeClock
from tests.support.fake_store import FakeTaskStore
from tests.support.pods import disruption, pod, running, terminated, unschedulable, waiting

SETTINGS = ControllerSettings(ended_grace_seconds=10, queued_grace_seconds=30, start_timeout_seconds=60)


class FakeTaskObjects:
    """The cluster as the controller sees it, in memory: Pods and Jobs as the Kubernetes API gives
    them, read through the same functions the Kubernetes adapter uses."""

    def __init__(self) -> None:
        self.pods: dict[str, tuple[dict[str, Any], bool]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.submitted: list[str] = []
        self.removed: list[str] = []
        self.events: list[tuple[str, str]] = []
        self.kueue = False
        self.released: list[str] = []
        self.on_release: Any = None

    def pod(self, task_id: str) -> PodSeen | None:
        seen = self.pods.get(task_id)
        return None if seen is None else diagnose.pod_seen(*seen)

    def end_of(self, task: Task) -> Verdict | None:
        pod, deleted = self.pods[task.id]
        return diagnose.ended(task, pod, deleted=deleted)

    def steps(self, task: Task) -> list[lifecycle.Event]:
        return observe.events(task, self.pods[task.id][0])

    def forget(self, task_id: str) -> None:
        if task_id in self.pods and self.pods[task_id][1]:
            del self.pods[task_id]

    async def job(self, task_id: str) -> JobSeen | None:
        job = self.jobs.get(task_id)
        return None if job is None else diagnose.job_seen(job, admitted_elsewhere=self.kueue)

    async def admission(self, task_id: str) -> str:
        return "Kueue: couldn't assign flavors to pod set main: insufficient quota for cpu"

    async def known(self) -> set[str]:
        return set(self.pods) | set(self.jobs)

    async def submit(self, task: Task) -> None:
        self.submitted.append(task.id)
        self.jobs[task.id] = {"spec": {"suspend": False}, "status": {}}

    async def release(self, task: Task) -> None:
        if self.on_release is not None:
            await self.on_release(task)
        self.released.append(task.id)
        self.jobs[task.id] = {"spec": {"suspend": False}, "status": {}}

    async def remove(self, task_id: str) -> bool:
        self.removed.append(task_id)
        self.jobs.pop(task_id, None)
        self.pods.pop(task_id, None)
        return True

    async def event(self, task_id: str, reason: str, message: str, *, warning: bool) -> None:
        self.events.append((task_id, reason))


class Harness:
    def __init__(self, store: TaskStore, clock: FakeClock) -> None:
        self.store = store
        self.clock = clock
        self.objects = FakeTaskObjects()
        self.controller = Controller(store, self.objects, SETTINGS, clock=clock)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    async def task(self, state: State = State.QUEUED, owner: str = "a", **fields: Any) -> Task:
        task = make_task(self.clock, **fields)
        await self.store.create(task, owner=owner, system_logs=[])
        if state is not State.QUEUED:
            assert await self.store.transition(task.id, state, now=self.clock.now())
        return task

    async def full(self, task_id: str) -> Task:
        return await self.store.get(task_id)


@pytest.fixture
def store() -> FakeTaskStore:
    return FakeTaskStore()


@pytest.fixture
def h(store: TaskStore, clock: FakeClock) -> Harness:
    return Harness(store, clock)


async def test_an_ended_pod_waits_for_the_recorder_then_is_written_with_its_steps(h: Harness) -> None:
    task = await h.task(State.RUNNING, executors=2)
    h.objects.pods[task.id] = (
        pod(
            task.id, terminated("tif"), terminated("executor-0"), terminated("executor-1", 3), phase="Failed"
        ),
        False,
    )
    await h.controller.reconcile(task.id)
    assert (await h.full(task.id)).state is State.RUNNING, "the recorder gets its grace"
    h.advance(SETTINGS.ended_grace_seconds)
    await h.controller.reconcile(task.id)
    done = await h.full(task.id)
    assert done.state is State.EXECUTOR_ERROR
    log = done.logs[0]  # type: ignore[index]
    assert [e.exit_code for e in log.logs] == [0, 3]
    assert log.metadata == {"termination_reason": "Error"}
    assert log.system_logs == ["the recorder did not record the task's end (Kubernetes shows it)"]
    assert h.objects.events == [(task.id, "TaskExecutorError")]
    history = await h.store.history(task.id)
    await h.controller.reconcile(task.id)
    assert await h.store.history(task.id) == history, "a second pass changes nothing"
    assert len(h.controller.actions) == 1


async def test_the_recorder_writing_first_leaves_nothing_to_do(h: Harness) -> None:
    task = await h.task(State.RUNNING)
    h.objects.pods[task.id] = (
        pod(task.id, terminated("tif"), terminated("executor-0"), phase="Succeeded"),
        False,
    )
    await h.controller.reconcile(task.id)
    await h.store.transition(task.id, State.COMPLETE, now=h.clock.now())
    h.advance(SETTINGS.ended_grace_seconds)
    await h.controller.reconcile(task.id)
    log = (await h.full(task.id)).logs[0]  # type: ignore[index]
    assert (log.system_logs, log.metadata) == (None, None)
    assert h.controller.actions == []


async def test_an_evicted_pod_is_preempted_with_the_kubernetes_reason(h: Harness) -> None:
    task = await h.task(State.RUNNING)
    evicted = pod(
        task.id,
        terminated("tif"),
        terminated("executor-0", 137),
        phase="Failed",
        reason="Evicted",
        message="The node was low on resource: memory.",
        conditions=[disruption("TerminationByKubelet")],
    )
    h.objects.pods[task.id] = (evicted, True)  # deleted: no grace to wait
    await h.controller.reconcile(task.id)
    done = await h.full(task.id)
    assert done.state is State.PREEMPTED
    log = done.logs[0]  # type: ignore[index]
    assert log.metadata == {"termination_reason": "TerminationByKubelet"}
    assert "low on resource: memory" in log.system_logs[0]
    assert log.logs[0].exit_code == 137, "the executor's exit is still recorded"
    assert h.objects.pod(task.id) is None, "a deleted Pod's last status is dropped once settled"


async def test_a_pod_that_cannot_pull_its_image_fails_after_the_start_timeout(h: Harness) -> None:
    task = await h.task(State.INITIALIZING)
    h.objects.jobs[task.id] = {"spec": {}, "status": {}}
    stuck = pod(
        task.id, running("trec"), waiting("executor-0", "ImagePullBackOff", "Back-off pulling", "nope:1")
    )
    h.objects.pods[task.id] = (stuck, False)
    await h.controller.reconcile(task.id)
    h.advance(SETTINGS.start_timeout_seconds - 1)
    await h.controller.reconcile(task.id)
    assert (await h.full(task.id)).state is State.INITIALIZING
    assert h.objects.removed == []
    h.advance(1)
    await h.controller.reconcile(task.id)
    done = await h.full(task.id)
    assert done.state is State.SYSTEM_ERROR
    assert h.objects.removed == [task.id]
    log = done.logs[0]  # type: ignore[index]
    assert log.metadata == {"termination_reason": "ImagePullBackOff"}
    # What it waited for, noted once when first seen; then why it ended.
    assert len(log.system_logs) == 2
    assert log.system_logs[0].startswith("waiting: container executor-0 cannot start (ImagePullBackOff)")
    assert "nope:1" in log.system_logs[1]
    assert "Job was removed" in log.system_logs[1]


async def test_a_pod_waiting_for_its_claim_leaves_no_line(h: Harness) -> None:
    task = await h.task()
    claim = "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims"
    h.objects.pods[task.id] = (pod(task.id, phase="Pending", conditions=[unschedulable(claim)]), False)
    await h.controller.reconcile(task.id)
    h.advance(20)
    await h.controller.reconcile(task.id)
    h.objects.pods[task.id] = (pod(task.id, running("trec"), phase="Pending"), False)
    await h.controller.reconcile(task.id)
    assert not (await h.full(task.id)).logs, "nothing written for a claim being bound"


async def test_an_unschedulable_pod_that_becomes_schedulable_is_left_alone(h: Harness) -> None:
    task = await h.task()
    h.objects.pods[task.id] = (
        pod(task.id, phase="Pending", conditions=[unschedulable("Insufficient cpu")]),
        False,
    )
    await h.controller.reconcile(task.id)
    h.advance(SETTINGS.start_timeout_seconds / 2)
    h.objects.pods[task.id] = (pod(task.id, running("trec"), phase="Pending"), False)
    await h.controller.reconcile(task.id)
    h.objects.pods[task.id] = (
        pod(task.id, phase="Pending", conditions=[unschedulable("Insufficient cpu")]),
        False,
    )
    h.advance(SETTINGS.start_timeout_seconds / 2)
    await h.controller.reconcile(task.id)
    assert (await h.full(task.id)).state is State.QUEUED, "the timeout starts again"


@pytest.mark.parametrize(("waits", "ends"), [(0, False), (3600, False), (30, True)])
async def test_an_unschedulable_pod_waits_as_long_as_the_operator_says_with_the_reason_shown(
    store: TaskStore, clock: FakeClock, waits: float, ends: bool
) -> None:
    h = Harness(store, clock)
    h.controller = Controller(
        store,
        h.objects,
        msgspec.structs.replace(SETTINGS, unschedulable_timeout_seconds=waits),
        clock=clock,
    )
    task = await h.task()
    reason = "0/3 nodes are available: 1 Insufficient example.com/gpu, 2 node(s) didn't match selector"
    h.objects.pods[task.id] = (pod(task.id, phase="Pending", conditions=[unschedulable(reason)]), False)
    for _ in range(5):  # past start_timeout_seconds (60), which is for other reasons
        await h.controller.reconcile(task.id)
        h.advance(20)
    await h.controller.reconcile(task.id)
    seen = await h.full(task.id)
    log = seen.logs[0]  # type: ignore[index]
    assert log.system_logs[0] == f"waiting: the task's Pod cannot be scheduled: {reason}"
    if ends:
        assert seen.state is State.SYSTEM_ERROR
        assert "(for 30 s)" in log.system_logs[-1]
        assert h.objects.removed == [task.id]
    else:
        assert seen.state is State.QUEUED
        assert len(log.system_logs) == 1, "noted once"
        assert h.objects.removed == []


async def test_a_queued_task_without_a_job_gets_one_once(h: Harness) -> None:
    task = await h.task()
    await h.controller.reconcile(task.id)
    assert h.objects.submitted == [], "young tasks are the API's to submit"
    h.advance(SETTINGS.queued_grace_seconds)
    await h.controller.reconcile(task.id)
    await h.controller.reconcile(task.id)
    assert h.objects.submitted == [task.id]
    assert h.objects.events == [(task.id, "JobSubmitted")]


async def test_a_job_left_suspended_is_released_unless_kueue_holds_it(h: Harness) -> None:
    task = await h.task()
    h.objects.jobs[task.id] = {"spec": {"suspend": True}, "status": {}}
    h.objects.kueue = True
    h.advance(SETTINGS.queued_grace_seconds)
    await h.controller.reconcile(task.id)
    await h.controller.reconcile(task.id)
    assert h.objects.submitted == []
    assert (await h.full(task.id)).logs[0].system_logs == [  # type: ignore[index]
        "waiting: Kueue: couldn't assign flavors to pod set main: insufficient quota for cpu"
    ], "why Kueue holds it, once"
    h.objects.kueue = False
    await h.controller.reconcile(task.id)
    assert h.objects.submitted == [task.id]


async def test_canceling_ends_canceled_once_the_objects_are_gone(h: Harness) -> None:
    task = await h.task(State.CANCELING)
    h.objects.jobs[task.id] = {"spec": {}, "status": {}}
    await h.controller.reconcile(task.id)
    assert (await h.full(task.id)).state is State.CANCELED
    assert h.objects.removed == [task.id]


async def test_objects_of_unknown_tasks_are_removed_unless_configured_not_to(h: Harness) -> None:
    h.objects.jobs["stranger"] = {"spec": {}, "status": {}}
    await h.controller.reconcile("stranger")
    assert h.objects.removed == ["stranger"]
    keep = Controller(h.store, h.objects, ControllerSettings(delete_orphans=False))
    h.objects.jobs["another"] = {"spec": {}, "status": {}}
    await keep.reconcile("another")
    assert h.objects.removed == ["stranger"]


async def test_a_running_task_whose_job_and_pod_are_gone_is_a_system_error(h: Harness) -> None:
    task = await h.task(State.RUNNING)
    await h.controller.reconcile(task.id)
    done = await h.full(task.id)
    assert done.state is State.SYSTEM_ERROR
    assert done.logs[0].metadata == {"termination_reason": "Gone"}  # type: ignore[index]


async def test_the_work_queue_holds_each_id_once_and_gives_it_to_one_worker() -> None:
    queue = WorkQueue()
    for key in ("a", "b", "a"):
        queue.add(key)
    assert len(queue) == 2
    first = await queue.get()
    queue.add(first)
    assert len(queue) == 1, "an id being worked on is not handed to a second worker"
    second = await queue.get()
    queue.done(first)
    assert len(queue) == 1, "…but is handed out again once its worker is done"
    assert {first, second} == {"a", "b"}


class StoreWrapper:
    """The real store, with some calls replaced by a subclass."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


class FlakyStore(StoreWrapper):
    """The store, whose listing of open tasks fails once in a way nobody planned for."""

    def __init__(self, store: TaskStore) -> None:
        super().__init__(store)
        self.calls = 0

    async def ids_in_states(self, states: Any) -> list[str]:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("the driver said something new")
        return list(await self.store.ids_in_states(states))


async def test_the_resync_outlives_an_unexpected_store_error(h: Harness) -> None:
    task = await h.task(State.RUNNING)
    flaky = FlakyStore(h.store)
    settings = ControllerSettings(resync_seconds=0.01, delete_orphans=False)
    controller = Controller(flaky, h.objects, settings)  # type: ignore[arg-type]
    resyncing = asyncio.create_task(controller.resync())
    try:
        for _ in range(500):
            if len(controller.queue):
                break
            await asyncio.sleep(0.01)
        assert not resyncing.done(), "the resync loop ended"
        assert flaky.calls >= 2
        assert await controller.queue.get() == task.id
    finally:
        resyncing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await resyncing


class CountingStore(StoreWrapper):
    """The store, noting the view of every task read and every write."""

    def __init__(self, store: TaskStore) -> None:
        super().__init__(store)
        self.views: list[View] = []
        self.writes: list[tuple[Any, ...]] = []

    async def get(self, task_id: str, *, view: View = View.FULL, owner: str | None = None) -> Task:
        self.views.append(view)
        return await self.store.get(task_id, view=view, owner=owner)

    async def transition(self, task_id: str, state: State, **kwargs: Any) -> bool:
        self.writes.append(("transition", state))
        return await self.store.transition(task_id, state, **kwargs)

    async def record_executor(self, task_id: str, index: int, **kwargs: Any) -> None:
        self.writes.append(("executor", index, "exit_code" in kwargs))
        await self.store.record_executor(task_id, index, **kwargs)

    async def apply(self, task_id: str, changes: list[Change]) -> Applied:
        """Several writes in one transaction: noted one by one, as the single writes are."""
        for change in changes:
            if isinstance(change, Moved):
                self.writes.append(("transition", change.target))
            elif isinstance(change, ExecutorRan):
                self.writes.append(("executor", change.index, change.exit_code is not None))
        return await self.store.apply(task_id, changes)


async def test_a_pass_over_a_task_running_well_reads_only_its_state(h: Harness) -> None:
    task = await h.task(State.RUNNING)
    h.objects.pods[task.id] = (pod(task.id, terminated("tif"), running("executor-0"), phase="Pending"), False)
    counting = CountingStore(h.store)
    controller = Controller(counting, h.objects, SETTINGS)  # type: ignore[arg-type]
    await controller.reconcile(task.id)
    assert counting.views == [View.MINIMAL]
    assert controller.actions == []
    h.objects.pods[task.id] = (
        pod(task.id, terminated("tif"), terminated("executor-0", 2), phase="Failed"),
        True,
    )
    await controller.reconcile(task.id)
    assert counting.views == [View.MINIMAL, View.MINIMAL, View.FULL], "acting reads the whole task"
    assert (await h.full(task.id)).state is State.EXECUTOR_ERROR


async def test_a_pass_writes_only_the_steps_the_recorder_did_not(h: Harness) -> None:
    task = await h.task(State.RUNNING, executors=2)
    now = h.clock.now()
    await h.store.record_executor(task.id, 0, start_time=now, end_time=now, exit_code=0)
    h.objects.pods[task.id] = (
        pod(
            task.id, terminated("tif"), terminated("executor-0"), terminated("executor-1", 3), phase="Failed"
        ),
        True,  # deleted: no grace
    )
    counting = CountingStore(h.store)
    controller = Controller(counting, h.objects, SETTINGS)  # type: ignore[arg-type]
    await controller.reconcile(task.id)
    assert counting.writes == [
        ("executor", 1, False),
        ("executor", 1, True),
        ("transition", State.EXECUTOR_ERROR),
    ], "the recorded executor, INITIALIZING and RUNNING are not written again"
    done = await h.full(task.id)
    assert done.state is State.EXECUTOR_ERROR
    assert [e.exit_code for e in done.logs[0].logs] == [0, 3]  # type: ignore[index]


async def test_each_pass_returns_when_to_look_again(h: Harness) -> None:
    task = await h.task(State.RUNNING)
    h.objects.pods[task.id] = (
        pod(task.id, terminated("tif"), terminated("executor-0"), phase="Succeeded"),
        False,
    )
    assert await h.controller.reconcile(task.id) == Requeue(SETTINGS.ended_grace_seconds)
    h.advance(4)
    assert await h.controller.reconcile(task.id) == Requeue(SETTINGS.ended_grace_seconds - 4)
    h.advance(6)
    assert await h.controller.reconcile(task.id) is None, "written: nothing more to do"
    assert (await h.full(task.id)).state is State.COMPLETE
    queued = await h.task()
    assert await h.controller.reconcile(queued.id) == Requeue(SETTINGS.queued_grace_seconds)
    assert len(h.controller.queue) == 0, "a pass decides; the worker queues"


async def _one_resync(controller: Controller) -> set[str]:
    """The ids one resync queues (it queues all of them at once, then sleeps)."""
    resyncing = asyncio.create_task(controller.resync())
    try:
        for _ in range(500):
            if len(controller.queue):
                break
            await asyncio.sleep(0.01)
        queued: set[str] = set()
        while len(controller.queue):
            key = await controller.queue.get()
            controller.queue.done(key)  # the test makes the passes itself
            queued.add(str(key))
    finally:
        resyncing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await resyncing
    return queued


async def test_a_resync_looks_only_at_tasks_the_watch_does_not_show_running_well(h: Harness) -> None:
    """Its cost follows what needs a look: a task whose Pod runs well is left to the watch, however
    many there are; a task without a Pod, with an ended or stuck one, or being cancelled is queued."""
    healthy = [await h.task(State.RUNNING) for _ in range(50)]
    for task in healthy:
        h.objects.pods[task.id] = (pod(task.id, terminated("tif"), running("executor-0")), False)
    canceling = await h.task(State.RUNNING)
    h.objects.pods[canceling.id] = (pod(canceling.id, running("executor-0")), False)
    assert await h.store.transition(canceling.id, State.CANCELING, now=h.clock.now())
    podless = await h.task(State.RUNNING)
    ended = await h.task(State.RUNNING)
    h.objects.pods[ended.id] = (pod(ended.id, terminated("executor-0", 1), phase="Failed"), False)
    stuck = await h.task(State.INITIALIZING)
    h.objects.pods[stuck.id] = (pod(stuck.id, waiting("tif", "ErrImagePull"), phase="Pending"), False)
    queued = await h.task()

    controller = Controller(h.store, h.objects, ControllerSettings(delete_orphans=False))
    queued_ids = await _one_resync(controller)
    assert queued_ids == {canceling.id, podless.id, ended.id, stuck.id, queued.id}


async def test_the_orphan_sweep_looks_at_a_finished_task_once_and_never_at_healthy_ones(h: Harness) -> None:
    """Finished Jobs wait out their TTL in the cluster, thousands of them on a busy one: the sweep
    passes over each once (to find it terminal), an orphan until its objects are gone, and a task
    running well never."""
    healthy = [await h.task(State.RUNNING) for _ in range(20)]
    for task in healthy:
        h.objects.pods[task.id] = (pod(task.id, terminated("tif"), running("executor-0")), False)
        h.objects.jobs[task.id] = {"spec": {"suspend": False}, "status": {}}
    finished = [await h.task(State.RUNNING) for _ in range(20)]
    for task in finished:
        assert await h.store.transition(task.id, State.COMPLETE, now=h.clock.now())
        h.objects.pods[task.id] = (pod(task.id, terminated("executor-0"), phase="Succeeded"), False)
        h.objects.jobs[task.id] = {"spec": {"suspend": False}, "status": {"succeeded": 1}}
    orphan = "orphan-of-no-task"
    h.objects.jobs[orphan] = {"spec": {"suspend": False}, "status": {}}

    controller = Controller(h.store, h.objects, ControllerSettings(), clock=h.clock)
    first = await _one_resync(controller)
    assert first == {t.id for t in finished} | {orphan}
    for task_id in sorted(first):
        assert await controller.reconcile(task_id) is None
    assert h.objects.removed == [orphan]
    assert all(t.id in h.objects.jobs for t in finished), "a finished Job is left to its TTL"

    assert await _one_resync(controller) == set(), "nothing changed: nothing to look at"

    # A task that ends is looked at once more, and a Job that reappears for no task is an orphan again.
    assert await h.store.transition(healthy[0].id, State.COMPLETE, now=h.clock.now())
    h.objects.pods[healthy[0].id] = (pod(healthy[0].id, terminated("executor-0"), phase="Succeeded"), False)
    h.objects.jobs[orphan] = {"spec": {"suspend": False}, "status": {}}
    again = await _one_resync(controller)
    assert again == {healthy[0].id, orphan}
    for task_id in sorted(again):
        await controller.reconcile(task_id)

    # What the sweep remembers goes with the objects: a finished task whose Job is gone is dropped.
    del h.objects.jobs[finished[0].id], h.objects.pods[finished[0].id]
    assert await _one_resync(controller) == set()
    assert controller._closed == {t.id for t in finished[1:]} | {healthy[0].id}


async def test_a_resync_with_the_database_down_queues_nothing_and_recovers(h: Harness) -> None:
    """Every pass starts with a read of the database: while it is down a resync leaves the queue
    alone (no storm of passes that would all fail), and the next one after it is back does the work."""
    podless = await h.task(State.RUNNING)
    h.objects.jobs["orphan-of-no-task"] = {"spec": {"suspend": False}, "status": {}}
    store = h.store
    assert isinstance(store, FakeTaskStore)
    controller = Controller(store, h.objects, ControllerSettings(), clock=h.clock)
    down = StoreUnavailable("the database restarts")

    async def unavailable(*_: Any, **__: Any) -> list[str]:
        raise down

    real = store.ids_in_states
    store.ids_in_states = unavailable  # type: ignore[method-assign]
    await controller._resync_once()
    assert len(controller.queue) == 0
    store.ids_in_states = real  # type: ignore[method-assign]
    assert await _one_resync(controller) == {podless.id, "orphan-of-no-task"}


async def test_an_image_the_registry_says_does_not_exist_fails_at_once(h: Harness) -> None:
    task = await h.task(State.INITIALIZING)
    h.objects.jobs[task.id] = {"spec": {}, "status": {}}
    message = 'failed to resolve reference "nope:1": nope:1: not found'
    h.objects.pods[task.id] = (
        pod(task.id, running("trec"), waiting("executor-0", "ErrImagePull", message, "nope:1")),
        False,
    )
    assert await h.controller.reconcile(task.id) is None
    done = await h.full(task.id)
    assert done.state is State.SYSTEM_ERROR
    assert h.objects.removed == [task.id]
    log = done.logs[0]  # type: ignore[index]
    assert log.metadata == {"termination_reason": "ErrImagePull"}
    assert message in log.system_logs[0]
    assert " s)" not in log.system_logs[0], "no start timeout was waited"
    await h.controller.reconcile(task.id)
    assert (await h.full(task.id)).logs[0].system_logs == log.system_logs  # type: ignore[index]


# Caps on the tasks in flight: the releaser


def capped(store: TaskStore, clock: FakeClock, **caps: int) -> Harness:
    harness = Harness(store, clock)
    harness.controller = Controller(store, harness.objects, SETTINGS, clock=clock, caps=Caps(**caps))
    return harness


async def test_held_tasks_are_released_fairly_within_the_caps(store: TaskStore, clock: FakeClock) -> None:
    h = capped(store, clock, per_owner=2, total=3)
    releaser = h.controller.releaser
    assert releaser is not None
    flood = [await h.task(owner="flooder") for _ in range(5)]
    small = [await h.task(owner="small") for _ in range(2)]
    assert await releaser.pass_once() == [flood[0].id, small[0].id, flood[1].id]
    assert releaser.held == 4
    # Released, no Pod shown yet: still in flight, so a second pass lets nobody in.
    assert await releaser.pass_once() == []
    for task in (flood[0], small[0], flood[1]):
        h.objects.pods[task.id] = (pod(task.id, running("tif")), False)
    assert await releaser.pass_once() == []
    await h.store.transition(flood[0].id, State.INITIALIZING, now=h.clock.now())
    await h.store.transition(flood[0].id, State.SYSTEM_ERROR, now=h.clock.now())
    # One of the flooder's slots is free; both have one in flight, the flooder's next is older.
    assert await releaser.pass_once() == [flood[2].id]
    await h.store.transition(small[0].id, State.CANCELING, now=h.clock.now())
    await h.store.transition(small[0].id, State.CANCELED, now=h.clock.now())
    h.objects.pods.pop(small[0].id)
    assert await releaser.pass_once() == [small[1].id], "the small user's turn: fewer in flight"
    assert h.objects.released == [flood[0].id, small[0].id, flood[1].id, flood[2].id, small[1].id]
    assert "released" in {a.split(":")[0] for _, a in h.controller.actions}


async def test_a_held_task_is_the_releasers_not_the_reconcilers(store: TaskStore, clock: FakeClock) -> None:
    h = capped(store, clock, per_owner=1)
    first, second = await h.task(), await h.task()
    assert h.controller.releaser is not None
    await h.controller.releaser.pass_once()
    h.advance(SETTINGS.queued_grace_seconds + 1)
    await h.controller.reconcile(second.id)
    assert h.objects.submitted == []
    assert h.objects.released == [first.id]
    assert await h.store.state(second.id) is State.QUEUED
    # Held for a while: its FULL view says why it waits, once.
    await h.controller.releaser.pass_once()
    for _ in range(2):
        await h.controller.releaser.pass_once()
    note = "waiting: the caps on tasks in flight are reached (max_active_tasks_per_user = 1)"
    assert [line.split(";")[0] for line in (await h.full(second.id)).logs[0].system_logs] == [note]  # type: ignore[index]


async def test_a_task_cancelled_while_it_is_released_has_its_objects_removed(
    store: TaskStore, clock: FakeClock
) -> None:
    h = capped(store, clock, total=5)
    task = await h.task()

    async def cancel_meanwhile(released: Task) -> None:
        await h.store.transition(released.id, State.CANCELING, now=h.clock.now())

    h.objects.on_release = cancel_meanwhile
    assert h.controller.releaser is not None
    await h.controller.releaser.pass_once()
    assert h.objects.removed == [task.id]
    assert task.id not in h.objects.jobs


async def test_a_task_the_cluster_refuses_at_release_ends_system_error(
    store: TaskStore, clock: FakeClock
) -> None:
    h = capped(store, clock, total=1)
    refused, after = await h.task(), await h.task()

    async def refuse(released: Task) -> None:
        if released.id == refused.id:
            raise ClusterRefused("Kubernetes refused the task's objects: 422 bad")

    h.objects.on_release = refuse
    assert h.controller.releaser is not None
    assert await h.controller.releaser.pass_once() == [refused.id]
    seen = await h.full(refused.id)
    assert seen.state is State.SYSTEM_ERROR
    assert seen.logs[0].system_logs[-1] == "Kubernetes refused the task's objects: 422 bad"  # type: ignore[index]
    assert await h.controller.releaser.pass_once() == [after.id], "its slot was not kept"
