"""PodRecorder, as trec and tctl use it, against the FakeTaskStore: a TaskPod's statuses become the
task's states and logs, each status seen new in one transaction, a status seen again in none."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from poiesis.adapters.kubernetes import observe
from poiesis.adapters.kubernetes.recording import PodRecorder
from poiesis.domain.states import State
from poiesis.domain.submission import NewInput, NewOutput
from poiesis.domain.tes import OutputFileLog, Task, View
from poiesis.domain.times import parse_time, rfc3339
from poiesis.ports.store import Moved, StoreUnavailable
from tests.builders import make_task
from tests.conftest import FakeClock
from tests.support.fake_store import FakeTaskStore
from tests.support.pods import pod, running, terminated

FILES = [OutputFileLog(url="s3://b/out", path="/data/out", size_bytes="42")]


async def tails(index: int) -> tuple[str, str]:
    return f"stdout of {index}\n", f"stderr of {index}\n"


async def outputs() -> list[OutputFileLog]:
    return FILES


async def stored(clock: FakeClock, executors: int = 3, **fields: Any) -> tuple[FakeTaskStore, Task]:
    store = FakeTaskStore()
    task = make_task(
        clock,
        executors=executors,
        inputs=[NewInput(path="/data/in", url="s3://b/in")],
        outputs=[NewOutput(path="/data/out", url="s3://b/out")],
        **fields,
    )
    await store.create(task, owner="a", system_logs=[])
    store.transactions = 0
    return store, await store.get(task.id)


def recorder(store: FakeTaskStore, task: Task, clock: FakeClock) -> PodRecorder:
    return PodRecorder(store, task, clock.now, tails=tails, outputs=outputs)


def life(task_id: str) -> list[dict[str, Any]]:
    """The statuses of a three-executor task's Pod with inputs and outputs, one change at a time."""
    t, r = terminated, running
    done = [t("tif"), t("executor-0"), t("executor-1"), t("executor-2")]
    return [
        pod(task_id, r("trec")),
        pod(task_id, r("trec"), r("tif")),
        pod(task_id, r("trec"), t("tif"), r("executor-0")),
        pod(task_id, r("trec"), t("tif"), t("executor-0"), r("executor-1")),
        pod(task_id, r("trec"), t("tif"), t("executor-0"), t("executor-1"), r("executor-2")),
        pod(task_id, r("trec"), *done, r("tof")),
        pod(task_id, r("trec"), *done, t("tof")),
    ]


@pytest.mark.parametrize("seen", [1, 5])
async def test_a_whole_life_costs_one_transaction_per_status_that_shows_something_new(
    clock: FakeClock, seen: int
) -> None:
    store, task = await stored(clock)
    rec = recorder(store, task, clock)
    ended = []
    for status in life(task.id):
        for _ in range(seen):
            ended.append(await rec.record(status))
    # Staging, the first executor, each later executor (with the last one's end), the outputs and
    # the end: the first status (only trec running) shows nothing.
    assert store.transactions == 6
    assert rec.transactions == 6
    assert ended[-1] is True
    assert not any(ended[:-seen])
    final = await store.get(task.id)
    assert final.state is State.COMPLETE
    log = (final.logs or [])[0]
    assert [(e.exit_code, e.stdout, e.stderr) for e in log.logs] == [
        (0, f"stdout of {i}\n", f"stderr of {i}\n") for i in range(3)
    ]
    assert log.outputs == FILES
    assert [(m.source, m.target) for m in await store.history(task.id)] == [
        (State.QUEUED, State.INITIALIZING),
        (State.INITIALIZING, State.RUNNING),
        (State.RUNNING, State.COMPLETE),
    ]


async def test_the_same_pod_state_five_times_writes_once(clock: FakeClock) -> None:
    store, task = await stored(clock)
    rec = recorder(store, task, clock)
    status = life(task.id)[4]  # two executors ended, the third running
    for _ in range(5):
        assert await rec.record(status) is False
    assert store.transactions == 1
    shown = await store.get(task.id)
    assert shown.state is State.RUNNING
    assert [e.exit_code for e in (shown.logs or [])[0].logs] == [0, 0]


async def test_a_restarted_recorder_writes_only_what_the_task_does_not_show(clock: FakeClock) -> None:
    store, task = await stored(clock)
    statuses = life(task.id)
    first = recorder(store, task, clock)
    for status in statuses[:4]:
        await first.record(status)
    before = store.transactions
    again = recorder(store, await store.get(task.id), clock)
    assert await again.record(statuses[3]) is False
    # The start of executor 1 was never visible in the task (no exit code yet): written again, once.
    assert store.transactions == before + 1
    assert await again.record(statuses[3]) is False
    assert store.transactions == before + 1


async def test_a_failed_stage_in_is_a_system_error_with_the_filers_line(clock: FakeClock) -> None:
    store, task = await stored(clock)
    rec = recorder(store, task, clock)
    failed = pod(
        task.id, running("trec"), terminated("tif", 1, message="staging the inputs failed: 404 s3://b/in")
    )
    assert await rec.record(failed) is True
    assert store.transactions == 1
    shown = await store.get(task.id)
    assert shown.state is State.SYSTEM_ERROR
    assert (shown.logs or [])[0].system_logs == ["staging the inputs failed: 404 s3://b/in"]


async def test_an_executor_killed_for_its_memory_is_an_executor_error(clock: FakeClock) -> None:
    store, task = await stored(clock, executors=1)
    rec = recorder(store, task, clock)
    killed = pod(
        task.id, running("trec"), terminated("tif"), terminated("executor-0", 137, reason="OOMKilled")
    )
    assert await rec.record(killed) is True
    shown = await store.get(task.id)
    assert shown.state is State.EXECUTOR_ERROR
    log = (shown.logs or [])[0]
    assert log.metadata == {"termination_reason": "OOMKilled"}
    assert [e.exit_code for e in log.logs] == [137]


async def test_a_task_ended_by_someone_else_is_recorded_as_ended(clock: FakeClock) -> None:
    store, task = await stored(clock)
    rec = recorder(store, task, clock)
    await rec.record(life(task.id)[2])
    await store.transition(task.id, State.CANCELING, now=clock.now())
    await store.transition(task.id, State.CANCELED, now=clock.now())
    writes = store.transactions
    assert await rec.record(life(task.id)[3]) is True
    assert await rec.record(life(task.id)[4]) is True
    assert (await store.get(task.id, view=View.MINIMAL)).state is State.CANCELED
    assert store.transactions == writes + 1, "one pass found the end (its executor write refused nothing)"


async def test_the_controllers_end_comes_with_the_steps_it_missed(clock: FakeClock) -> None:
    store, task = await stored(clock, executors=2)
    ended = pod(
        task.id, terminated("tif"), terminated("executor-0"), terminated("executor-1", 3), phase="Failed"
    )
    rec = PodRecorder(store, await store.get(task.id), clock.now)
    end = Moved(target=State.EXECUTOR_ERROR, at=clock.now(), reason="the recorder did not record it")
    assert await rec.record_end(observe.events(task, ended), end) is True
    assert store.transactions == 1
    shown = await store.get(task.id)
    assert shown.state is State.EXECUTOR_ERROR
    log = (shown.logs or [])[0]
    assert [(e.exit_code, e.stdout) for e in log.logs] == [(0, None), (3, None)]
    assert log.system_logs == ["the recorder did not record it"]
    again = PodRecorder(store, await store.get(task.id), clock.now)
    assert await again.record_end(observe.events(task, ended), end) is False, "the end was written already"


class FailingOnce(FakeTaskStore):
    """The database restarting under one write: it fails, and nothing of it is kept."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_next = False

    async def apply(self, task_id: str, changes: Any) -> Any:
        if self.fail_next:
            self.fail_next = False
            raise StoreUnavailable("database unavailable: restarting")
        return await super().apply(task_id, changes)


async def test_a_write_that_failed_is_made_again_on_the_next_pass(clock: FakeClock) -> None:
    store = FailingOnce()
    task = make_task(clock, executors=2)
    await store.create(task, owner="a", system_logs=[])
    rec = recorder(store, await store.get(task.id), clock)
    statuses = [
        pod(task.id, running("trec"), running("executor-0")),
        pod(task.id, running("trec"), terminated("executor-0"), running("executor-1")),
    ]
    await rec.record(statuses[0])
    store.fail_next = True
    with pytest.raises(StoreUnavailable):
        await rec.record(statuses[1])
    assert await rec.record(statuses[1]) is False
    shown = await store.get(task.id)
    assert [(e.exit_code, e.stdout) for e in (shown.logs or [])[0].logs] == [(0, "stdout of 0\n")]


async def test_the_launchers_own_times_replace_the_container_statuses_whole_seconds(clock: FakeClock) -> None:
    """The status says 12:00:00 for a start at 12:00:00.731: the executor's log holds the launcher's
    microseconds, the task starts when the recorder did, and the times are in order."""
    store, task = await stored(clock, executors=2)
    since = clock.now()
    rec = PodRecorder(store, task, clock.now, tails=tails, outputs=outputs, since=since)
    started = [since.replace(microsecond=0) + timedelta(seconds=2, microseconds=731_000 + i) for i in (0, 1)]
    message = [
        f"exit_code=0 started={rfc3339(s)} finished={rfc3339(s + timedelta(milliseconds=250))}"
        for s in started
    ]
    clock.advance(5)
    t, r = terminated, running
    await rec.record(pod(task.id, r("trec"), t("tif"), r("executor-0")))
    await rec.record(
        pod(
            task.id,
            r("trec"),
            t("tif"),
            t("executor-0", message=message[0]),
            t("executor-1", message=message[1]),
        )
    )
    full = await store.get(task.id, view=View.FULL)
    attempt = full.logs[0]  # type: ignore[index]
    assert [parse_time(e.start_time) for e in attempt.logs] == started  # type: ignore[arg-type]
    assert [parse_time(e.end_time) for e in attempt.logs] == [  # type: ignore[arg-type]
        s + timedelta(milliseconds=250) for s in started
    ]
    assert parse_time(attempt.start_time) == since  # type: ignore[arg-type]
    assert parse_time(attempt.start_time) <= parse_time(attempt.logs[0].start_time)  # type: ignore[arg-type]


def _failed_then_skipped(task_id: str, *tof: dict[str, Any]) -> dict[str, Any]:
    """executor-0 failed (its launcher exits 0 with the real code, so the Pod goes on), executor-1
    was skipped, and `tof` as given."""
    failed = terminated("executor-0", 0, message="exit_code=3")
    skipped = terminated("executor-1", 0, message="skipped: an earlier executor failed")
    return pod(task_id, running("trec"), terminated("tif"), failed, skipped, *tof)


async def test_a_failed_executors_outputs_are_uploaded_before_the_task_ends(clock: FakeClock) -> None:
    store, task = await stored(clock, executors=2)
    rec = recorder(store, task, clock)
    assert await rec.record(_failed_then_skipped(task.id, running("tof"))) is False
    assert (await store.get(task.id)).state is State.RUNNING, "not ended before the upload"
    assert await rec.record(_failed_then_skipped(task.id, terminated("tof"))) is True
    shown = await store.get(task.id)
    assert shown.state is State.EXECUTOR_ERROR
    log = (shown.logs or [])[0]
    assert [e.exit_code for e in log.logs] == [3], "the skipped executor did not run"
    assert log.outputs == FILES


async def test_a_failed_upload_after_an_executor_error_is_noted(clock: FakeClock) -> None:
    store, task = await stored(clock, executors=2)
    rec = recorder(store, task, clock)
    tof = terminated("tof", 1, message="uploading the outputs failed: 403 s3://b/out")
    assert await rec.record(_failed_then_skipped(task.id, tof)) is True
    shown = await store.get(task.id)
    assert shown.state is State.EXECUTOR_ERROR
    assert (shown.logs or [])[0].system_logs == [
        "after the executor error: uploading the outputs failed: 403 s3://b/out"
    ]


async def test_an_executor_skipped_though_none_failed_is_a_system_error(clock: FakeClock) -> None:
    store, task = await stored(clock, executors=2)
    rec = recorder(store, task, clock)
    # executor-0 wrote the failed mark itself and exited 0.
    forged = pod(
        task.id,
        running("trec"),
        terminated("tif"),
        terminated("executor-0", 0, message="exit_code=0"),
        terminated("executor-1", 0, message="skipped: an earlier executor failed"),
        terminated("tof"),
    )
    assert await rec.record(forged) is True
    shown = await store.get(task.id)
    assert shown.state is State.SYSTEM_ERROR
    assert (shown.logs or [])[0].system_logs == ["executor 1 was skipped, yet no executor failed"]


async def test_an_executor_reported_oom_killed_ends_the_task_at_once_whatever_its_exit(
    clock: FakeClock,
) -> None:
    """The kubelet fails an init container reported OOMKilled even if it exited 0: no upload follows."""
    store, task = await stored(clock, executors=1)
    rec = recorder(store, task, clock)
    killed = terminated("executor-0", 0, reason="OOMKilled", message="exit_code=137")
    assert await rec.record(pod(task.id, running("trec"), terminated("tif"), killed)) is True
    shown = await store.get(task.id)
    assert shown.state is State.EXECUTOR_ERROR
    assert (shown.logs or [])[0].metadata == {"termination_reason": "OOMKilled"}
