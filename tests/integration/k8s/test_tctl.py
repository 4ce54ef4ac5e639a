"""Fault tests for the Task Controller on the test cluster: two `poiesis tctl` replicas, the API,
and (unless a test says otherwise) a `poiesis trec` process per Pod. Each test breaks something a
real cluster breaks and checks the final state and `system_logs` through the TES API."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import tes
from kubernetes import client

from poiesis.adapters.kubernetes.taskpod import job_name
from poiesis.adapters.sqlalchemy.engine import create_engine
from poiesis.adapters.sqlalchemy.store import SqlAlchemyTaskStore
from poiesis.domain.identity import new_task_id
from poiesis.domain.submission import NewTask, Rules, accept
from poiesis.domain.tes import Executor
from poiesis.domain.times import rfc3339
from tests.conftest import fresh_postgres_url_sync
from tests.integration.k8s.conftest import wait_until
from tests.integration.k8s.test_backend import Backend, backend, database_url, ex, namespace
from tests.integration.test_database_restart import SCRIPT, own_postgres
from tests.support.cluster import add_fake_node

pytestmark = pytest.mark.postgres
__all__ = ["database_url", "namespace", "own_postgres"]  # fixtures used here

TCTL = {
    "lease_seconds": 4,
    "renew_deadline_seconds": 3,
    "retry_seconds": 0.5,
    "resync_seconds": 3,
    "ended_grace_seconds": 2,
    "queued_grace_seconds": 2,
    "start_timeout_seconds": 3,
}
# Under a burst, a Pod waits for its volume claim to bind for a while: not a Pod that cannot start.
BATCH = TCTL | {"start_timeout_seconds": 300}


@pytest.fixture(scope="module")
def ctl(
    api_client: client.ApiClient,
    kubeconfig: str,
    namespace: str,
    database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Backend]:
    work = tmp_path_factory.mktemp("tctl")
    with backend(api_client, kubeconfig, namespace, database_url, work, tctl=TCTL) as running:
        wait_until(running.leader, timeout=30, what="a tctl leader")
        yield running


def log_of(task: tes.Task) -> Any:
    assert task.logs, task
    return task.logs[0]


def reason(task: tes.Task) -> str | None:
    return (log_of(task).metadata or {}).get("termination_reason")


def jobs(k: Backend, task_id: str) -> list[Any]:
    return k.batch.list_namespaced_job(k.namespace, label_selector=f"poiesis.io/task={task_id}").items


def running(k: Backend, task_id: str) -> None:
    wait_until(lambda: k.client.get_task(task_id).state == "RUNNING", timeout=60, what=f"{task_id} RUNNING")


def test_an_image_that_cannot_be_pulled(ctl: Backend) -> None:
    image = "unpullable.invalid/tool:1"
    task_id = ctl.client.create_task(tes.Task(executors=[tes.Executor(image=image, command=["tool"])]))
    task = ctl.wait(task_id, timeout=90)
    assert task.state == "SYSTEM_ERROR"
    assert reason(task) == "ImagePullBackOff"
    (line,) = log_of(task).system_logs  # stuck for less than the 5 s before a waiting note
    assert image in line
    assert "Job was removed" in line
    wait_until(lambda: not jobs(ctl, task_id), timeout=30, what="the Job removed")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_leaders_metrics_show_what_it_did_and_the_other_replica_idles(ctl: Backend) -> None:
    leader = ctl.leader()
    assert leader in ctl.tctls
    (other,) = set(ctl.tctls) - {leader}
    before = samples(ctl.tctl_metrics(leader))
    ended = ("poiesis_tctl_actions_total", (("action", "ended_system_error"),))
    task_id = ctl.client.create_task(
        tes.Task(executors=[tes.Executor(image="unpullable.invalid/metrics:1", command=["x"])])
    )
    assert ctl.wait(task_id, timeout=90).state == "SYSTEM_ERROR"
    after = samples(ctl.tctl_metrics(leader))
    assert after[("poiesis_tctl_leader", ())] == 1.0
    assert after[ended] == before.get(ended, 0.0) + 1
    passes = ("poiesis_tctl_reconcile_duration_seconds_count", (("outcome", "ok"),))
    assert after[passes] > before.get(passes, 0.0)
    assert ("poiesis_tctl_queue_depth", ()) in after

    def timed(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
        return sum(
            v for (name, _), v in samples.items() if name == "poiesis_task_state_duration_seconds_count"
        )

    # The ended task's time in each state it passed through, once.
    assert timed(after) >= timed(before) + 1
    assert (
        samples(ctl.tctl_metrics(leader))[
            ("poiesis_task_state_duration_seconds_count", (("state", "QUEUED"),))
        ]
        >= 1
    )
    idle = samples(ctl.tctl_metrics(other))
    assert idle[("poiesis_tctl_leader", ())] == 0.0
    assert not [k for k in idle if k[0] == "poiesis_tctl_actions_total"]


def test_more_cpu_than_any_node_has(ctl: Backend) -> None:
    task_id = ctl.client.create_task(tes.Task(executors=[ex("big")], resources=tes.Resources(cpu_cores=64)))
    task = ctl.wait(task_id, timeout=90)
    assert task.state == "SYSTEM_ERROR"
    assert reason(task) == "Unschedulable"
    assert "Insufficient cpu" in log_of(task).system_logs[0]
    wait_until(lambda: not jobs(ctl, task_id), timeout=30, what="the Job removed")


def test_an_executor_killed_for_its_memory(ctl: Backend) -> None:
    task_id = ctl.client.create_task(
        tes.Task(
            executors=[ex("hungry", KWOK_EXIT_CODE="137", KWOK_REASON="OOMKilled"), ex("never")],
            resources=tes.Resources(ram_gb=1),
        )
    )
    task = ctl.wait(task_id)
    assert task.state == "EXECUTOR_ERROR"
    assert reason(task) == "OOMKilled"
    assert [e.exit_code for e in log_of(task).logs] == [137]
    assert "executor 0" in log_of(task).system_logs[0]
    assert "1 GB" in log_of(task).system_logs[0]


def test_an_evicted_pod_is_preempted(ctl: Backend) -> None:
    task_id = ctl.client.create_task(tes.Task(executors=[ex("evicted", KWOK_EVICT="true")]))
    task = ctl.wait(task_id)
    assert task.state == "PREEMPTED"
    assert reason(task) == "TerminationByKubelet"
    assert "low on resource: memory" in log_of(task).system_logs[0]


def test_the_recorder_killed_then_the_pod_fails(ctl: Backend) -> None:
    task_id = ctl.client.create_task(tes.Task(executors=[ex("long", KWOK_HANG="true")]))
    running(ctl, task_id)
    (pod,) = ctl.pods(task_id)
    wait_until(lambda: pod.metadata.name in ctl.recorders.processes, timeout=10, what="its recorder")
    ctl.recorders.processes[pod.metadata.name].send_signal(signal.SIGKILL)
    # What the kubelet does when the Pod's activeDeadlineSeconds passes.
    message = "Pod was active on the node longer than the specified deadline"
    ctl.core.patch_namespaced_pod_status(
        pod.metadata.name,
        ctl.namespace,
        {"status": {"phase": "Failed", "reason": "DeadlineExceeded", "message": message}},
    )
    task = ctl.wait(task_id)
    assert task.state == "SYSTEM_ERROR"
    assert reason(task) == "DeadlineExceeded"
    assert log_of(task).system_logs == [f"the task's Pod failed (DeadlineExceeded): {message}"]
    assert log_of(task).logs[0].start_time, "what the recorder wrote before it died is kept"
    events = ctl.core.list_namespaced_event(
        ctl.namespace, field_selector=f"involvedObject.name=tes-{task_id}"
    ).items
    assert [
        (e.reason, e.type, e.source.component) for e in events if e.source.component == "poiesis-tctl"
    ] == [("TaskSystemError", "Warning", "poiesis-tctl")]


def test_a_node_deleted_under_a_running_pod(ctl: Backend) -> None:
    node = f"doomed-{uuid.uuid4().hex[:6]}"
    zone = f"zone-{node}"
    add_fake_node(ctl.core, node, labels={"topology.kubernetes.io/zone": zone})
    task_id = ctl.client.create_task(
        tes.Task(executors=[ex("long", KWOK_HANG="true")], resources=tes.Resources(zones=[zone]))
    )
    running(ctl, task_id)
    assert ctl.pods(task_id)[0].spec.node_name == node
    ctl.core.delete_node(node)
    task = ctl.wait(task_id, timeout=180)
    assert task.state == "PREEMPTED"
    assert "node" in log_of(task).system_logs[0]
    assert reason(task) in ("DeletionByPodGC", "DeletionByTaintManager")


def _create_in_database(database_url: str) -> str:
    """What the API has done when it dies between its commit and creating the Job."""

    async def create() -> str:
        engine = create_engine(database_url, pool_size=0)
        try:
            moment = datetime.now(UTC)
            new = NewTask(executors=[Executor(image="registry.example/a:1", command=["a"])])
            task = accept(new, task_id=new_task_id(moment), creation_time=rfc3339(moment), rules=Rules()).task
            await SqlAlchemyTaskStore(engine, reader=engine).create(task, owner="", system_logs=[])
            return task.id
        finally:
            await engine.dispose()

    return asyncio.run(create())


def test_the_api_died_after_its_commit(ctl: Backend) -> None:
    task_id = _create_in_database(ctl.database_url)
    task = ctl.wait(task_id, timeout=60)
    assert task.state == "COMPLETE"
    assert "created the missing Job" in ctl.tctl_log()


def test_a_job_of_no_task_is_removed_and_a_finished_tasks_is_left_to_its_ttl(ctl: Backend) -> None:
    """The orphan sweep lists the task Jobs' metadata from the real apiserver: a Job labelled for a
    task the database does not know goes; a finished task's Job stays for its TTL."""
    finished = ctl.client.create_task(tes.Task(executors=[ex("a")]))
    assert ctl.wait(finished, timeout=60).state == "COMPLETE"
    stray = new_task_id(datetime.now(UTC))
    ctl.batch.create_namespaced_job(
        ctl.namespace,
        {
            "metadata": {"name": job_name(stray), "labels": {"poiesis.io/task": stray}},
            "spec": {
                "suspend": True,
                "template": {
                    "metadata": {"labels": {"poiesis.io/task": stray}},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "c", "image": "registry.example/stray:1"}],
                    },
                },
            },
        },
    )
    wait_until(lambda: not jobs(ctl, stray), timeout=60, what="the stray Job removed")
    # The Job goes before the task's other objects, and the line follows the last of them.
    removed = f"task {stray}: removed the objects of a task the database does not know"
    wait_until(lambda: removed in ctl.tctl_log(), timeout=30, what="tctl's line on the stray Job")
    time.sleep(2 * TCTL["resync_seconds"])  # two more resyncs
    assert jobs(ctl, finished), "a finished task's Job waits out its TTL"
    assert f"task {finished}: removed" not in ctl.tctl_log()


def states_by_parity(k: Backend, ids: list[str], timeout: float) -> dict[str, tes.Task]:
    ended: dict[str, tes.Task] = {}
    deadline = time.monotonic() + timeout
    while len(ended) < len(ids):
        assert time.monotonic() < deadline, f"{len(ended)} of {len(ids)} ended"
        for task_id in ids:
            if task_id not in ended:
                task = k.client.get_task(task_id, view="FULL")
                if task.state in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "PREEMPTED", "CANCELED"):
                    ended[task_id] = task
        time.sleep(0.5)
    return ended


def submit_batch(k: Backend, n: int) -> list[str]:
    return [
        k.client.create_task(tes.Task(executors=[ex("a"), ex("b", KWOK_EXIT_CODE=str(3 * (i % 2)))]))
        for i in range(n)
    ]


def check_batch(k: Backend, ids: list[str], ended: dict[str, tes.Task]) -> None:
    for i, task_id in enumerate(ids):
        task = ended[task_id]
        assert task.state == ("EXECUTOR_ERROR" if i % 2 else "COMPLETE"), (task_id, log_of(task).system_logs)
        assert [e.exit_code for e in log_of(task).logs] == [0, 3 * (i % 2)]
        assert len(log_of(task).system_logs) == 1, "one terminal write per task"
        history = k.history(task_id)
        assert sum(h in ("COMPLETE", "EXECUTOR_ERROR") for h in history) == 1, history


def test_the_leader_killed_while_a_hundred_tasks_run(
    api_client: client.ApiClient,
    kubeconfig: str,
    postgres_server: str,
    postgres_template: str,
    tmp_path: Path,
) -> None:
    database_url = fresh_postgres_url_sync(postgres_server, postgres_template)
    space = f"l-{uuid.uuid4().hex[:8]}"
    core: Any = client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": space}})
    try:
        wait_until(lambda: core.list_namespaced_service_account(space).items, timeout=30, what="account")
        # No recorders: every end is the controller's to write.
        with backend(api_client, kubeconfig, space, database_url, tmp_path, recorders=None, tctl=BATCH) as k:
            first = wait_until(k.leader, timeout=30, what="a tctl leader")
            ids = submit_batch(k, 100)
            wait_until(
                lambda: sum(k.client.get_task(t).state != "QUEUED" for t in ids[:20]) >= 5,
                timeout=120,
                what="some tasks recorded",
            )
            k.tctls[first].send_signal(signal.SIGKILL)
            ended = states_by_parity(k, ids, timeout=400)
            assert k.leader() not in (None, first)
            check_batch(k, ids, ended)
    finally:
        core.delete_namespace(space, propagation_policy="Background")


def test_the_database_restarted_during_a_run(
    api_client: client.ApiClient, kubeconfig: str, own_postgres: tuple[str, str], tmp_path: Path
) -> None:
    url, place = own_postgres
    directory, port = place.split()
    space = f"d-{uuid.uuid4().hex[:8]}"
    core: Any = client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": space}})
    try:
        wait_until(lambda: core.list_namespaced_service_account(space).items, timeout=30, what="account")
        with backend(api_client, kubeconfig, space, url, tmp_path, recorders=None, tctl=BATCH) as k:
            wait_until(k.leader, timeout=30, what="a tctl leader")
            ids = submit_batch(k, 20)
            subprocess.run([SCRIPT, "stop", directory], check=True, capture_output=True)
            time.sleep(8)  # the Pods end while the database is down
            subprocess.run([SCRIPT, "up", directory, port], check=True, capture_output=True)
            ended = states_by_parity(k, ids, timeout=180)
            check_batch(k, ids, ended)
            assert all(p.poll() is None for p in k.tctls.values()), "the controllers rode it out"
    finally:
        core.delete_namespace(space, propagation_policy="Background")
