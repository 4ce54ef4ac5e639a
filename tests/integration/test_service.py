"""TaskService against the real stores, with a FakeCluster that can refuse or delay."""

from __future__ import annotations

import pytest
from ulid import ULID

from poiesis.adapters.sqlalchemy.store import SqlAlchemyTaskStore
from poiesis.domain.errors import TaskNotFound
from poiesis.domain.states import State
from poiesis.domain.submission import Rules
from poiesis.domain.tes import Task, View
from poiesis.domain.times import parse_time, rfc3339
from poiesis.ports.cluster import ClusterRefused, ClusterUnavailable
from poiesis.services.tasks import TaskService
from tests.conftest import FakeClock

BODY = b'{"name": "t", "executors": [{"image": "alpine", "command": ["true"]}]}'


class FakeCluster:
    """A cluster that records what it was asked, and can be unreachable or slow to clean up."""

    name = "fake"

    def __init__(self) -> None:
        self.reachable = True
        self.refusal: str | None = None
        self.removal_done = True
        self.submitted: list[str] = []
        self.cancelled: list[str] = []

    async def submit(self, task: Task) -> None:
        if not self.reachable:
            raise ClusterUnavailable("connection refused")
        if self.refusal:
            raise ClusterRefused(self.refusal)
        self.submitted.append(task.id)

    async def cancel(self, task_id: str) -> bool:
        if not self.reachable:
            raise ClusterUnavailable("connection refused")
        self.cancelled.append(task_id)
        return self.removal_done


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def service(store: SqlAlchemyTaskStore, cluster: FakeCluster, clock: FakeClock) -> TaskService:
    return TaskService(store=store, cluster=cluster, clock=clock, rules=Rules())


async def test_created_tasks_are_handed_to_the_cluster(
    service: TaskService, cluster: FakeCluster, clock: FakeClock
) -> None:
    task_id = await service.create(BODY, owner="alice")
    assert cluster.submitted == [task_id]
    task = await service.get(task_id, view=View.BASIC, owner="alice")
    assert task.state is State.QUEUED
    assert isinstance(task, Task)
    # One reading of the clock stamps both the id and the creation time.
    assert ULID.from_str(task_id.upper()).datetime == clock.now().replace(
        microsecond=clock.now().microsecond // 1000 * 1000
    )
    assert task.creation_time == rfc3339(clock.now())


async def test_an_unreachable_cluster_leaves_the_task_queued_not_lost(
    service: TaskService, cluster: FakeCluster, store: SqlAlchemyTaskStore
) -> None:
    cluster.reachable = False
    task_id = await service.create(BODY, owner="alice")
    assert await store.state(task_id) is State.QUEUED
    assert await store.ids_in_states([State.QUEUED]) == [task_id]


async def test_a_task_the_cluster_refuses_is_a_system_error_saying_why(
    service: TaskService, cluster: FakeCluster, store: SqlAlchemyTaskStore
) -> None:
    cluster.refusal = "Kubernetes refused the task's objects: 403 exceeded quota: compute-resources"
    task_id = await service.create(BODY, owner="alice")
    task = await store.get(task_id)
    assert task.state is State.SYSTEM_ERROR
    assert task.logs[0].system_logs == [cluster.refusal]  # type: ignore[index]


async def test_cancel_waits_for_the_cluster_to_remove_the_task(
    service: TaskService, cluster: FakeCluster, store: SqlAlchemyTaskStore
) -> None:
    task_id = await service.create(BODY, owner="alice")
    cluster.removal_done = False
    await service.cancel(task_id, owner=None)
    assert await store.state(task_id) is State.CANCELING
    cluster.reachable = False
    await service.cancel(task_id, owner=None)  # still CANCELING; the controller finishes it later
    assert await store.state(task_id) is State.CANCELING
    cluster.reachable, cluster.removal_done = True, True
    await service.cancel(task_id, owner=None)
    assert await store.state(task_id) is State.CANCELED
    assert [h.target for h in await store.history(task_id)] == [State.CANCELING, State.CANCELED]


async def test_cancel_of_a_finished_task_changes_nothing(
    service: TaskService, cluster: FakeCluster, store: SqlAlchemyTaskStore
) -> None:
    task_id = await service.create(BODY, owner="alice")
    await store.transition(task_id, State.COMPLETE, now=parse_time("2026-01-02T03:04:05Z"))
    await service.cancel(task_id, owner=None)
    assert await store.state(task_id) is State.COMPLETE
    assert cluster.cancelled == []


async def test_owners_see_only_their_tasks_when_scoped(service: TaskService) -> None:
    task_id = await service.create(BODY, owner="alice")
    with pytest.raises(TaskNotFound):
        await service.get(task_id, view=View.BASIC, owner="bob")
    with pytest.raises(TaskNotFound):
        await service.cancel(task_id, owner="bob")
    assert (await service.get(task_id, view=View.BASIC, owner="alice")).id == task_id
