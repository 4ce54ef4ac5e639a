"""Faults on the real node, with tasks in flight in each phase (inputs being staged, an executor
running, the next to start, outputs being uploaded, one just created): the kubelet restarted within
the node's grace and stopped past it, containerd restarted, PostgreSQL unreachable for 30 s while
the recorders write, a Pod evicted. Each test asserts every task's end state, its executors' output
and exit codes, its `system_logs` reason, a history with one terminal state, and that no Pod or Job
is left once the Job's TTL has passed.

The daemons are stopped and started by `scripts/real-node stop|start kubelet|containerd|control-plane`,
as a crash or an upgrade would: their containers keep running meanwhile. The filers reach S3 through
a slow link (tests/support/throttle.py), so a large input and a large output are still moving when
the fault comes. A poller records every Pod and Job each task had: one of each, or it ran twice."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import tes
from kubernetes import client

from poiesis.adapters.kubernetes.taskpod import STAGE_IN, STAGE_OUT
from poiesis.adapters.sqlalchemy.engine import create_engine
from poiesis.adapters.sqlalchemy.store import SqlAlchemyTaskStore
from tests.integration.k8s.conftest import wait_until
from tests.integration.realnode.test_taskpods import BUSYBOX, LABEL, TERMINAL, Node, namespace, tctl
from tests.support import postgres, storage
from tests.support.realnode import Seen, database_secret, storage_secret, tolerations, write_config
from tests.support.server import running_server
from tests.support.throttle import throttled

pytestmark = [pytest.mark.postgres, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

ROOT = Path(__file__).resolve().parents[3]
REAL_NODE = str(ROOT / "scripts" / "real-node")
PG = str(ROOT / "scripts" / "postgres")
NODE = "rn-node-0"
TTL = 20
TOLERATED = 5  # seconds a task Pod stays on a node that is not ready or unreachable
BIG = 12 * 1024 * 1024  # the large input and output: about 30 s each way over the slow link
LINK = 400 * 1024  # bytes per second, per connection, between the filers and S3


@dataclass
class Faults(Node):
    database_url: str = ""
    pg_dir: str = ""
    pg_port: str = ""

    def history(self, task_id: str) -> list[str]:
        async def read() -> list[str]:
            engine = create_engine(self.database_url, pool_size=0)
            try:
                return [
                    str(m.target) for m in await SqlAlchemyTaskStore(engine, reader=engine).history(task_id)
                ]
            finally:
                await engine.dispose()

        return asyncio.run(read())

    def jobs(self, task_id: str) -> list[Any]:
        batch = client.BatchV1Api(self.core.api_client)
        return list(batch.list_namespaced_job(self.namespace, label_selector=f"{LABEL}={task_id}").items)


@contextmanager
def stopped(name: str) -> Iterator[None]:
    """The node's `name` (kubelet, containerd, control-plane) stopped, and started again after."""
    subprocess.run([REAL_NODE, "stop", name], check=True, capture_output=True, timeout=60)
    try:
        yield
    finally:
        subprocess.run([REAL_NODE, "start", name], check=True, capture_output=True, timeout=180)


def ready(core: Any) -> str:
    conditions = core.read_node(NODE).status.conditions or []
    return next((c.status for c in conditions if c.type == "Ready"), "Unknown")


@pytest.fixture(scope="module")
def faults(
    real_api: client.ApiClient,
    real_kubeconfig: str,
    api_server: str,
    s3_server: storage.S3,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Faults]:
    core: Any = client.CoreV1Api(real_api)
    work = tmp_path_factory.mktemp("faults")
    # A PostgreSQL of this module's own: a test stops it.
    pg_dir = tempfile.mkdtemp(prefix="poiesis-faults-pg-")
    pg_port = str(postgres.free_port())
    up = subprocess.run([PG, "up", pg_dir, pg_port], check=True, capture_output=True, text=True)
    database_url = up.stdout.strip().splitlines()[-1]
    bucket = "faults"
    s3_server.client().create_bucket(Bucket=bucket)
    s3_server.client().put_object(Bucket=bucket, Key="big.bin", Body=b"\0" * BIG)
    try:
        with throttled(s3_server.endpoint, LINK) as slow, namespace(core) as space:
            database_secret(core, space, database_url)
            secret = storage_secret(core, space, dataclasses.replace(s3_server, endpoint=slow))
            config = write_config(
                work / "poiesis.toml",
                real_kubeconfig,
                space,
                api_server,
                tolerations(TOLERATED)
                + "[tctl]\nstart_timeout_seconds = 60\nended_grace_seconds = 5\nresync_seconds = 2\n",
                storage_secret=secret,
                ttl_seconds_after_finished=TTL,
            )
            env = {"POIESIS_CONFIG": str(config), "POIESIS_LOG_FORMAT": "text"}
            with running_server("api", database_url, work, env) as server, tctl(work, env, database_url):
                yield Faults(
                    server,
                    tes.HTTPClient(server.url, timeout=20),
                    core,
                    space,
                    s3_server,
                    bucket,
                    database_url=database_url,
                    pg_dir=pg_dir,
                    pg_port=pg_port,
                )
    finally:
        # Whatever a test left stopped, the next module gets the node as it was.
        for name in ("containerd", "kubelet"):
            if not Path(f"/tmp/poiesis-real-node/pids/{name}").exists():
                subprocess.run([REAL_NODE, "start", name], check=False, capture_output=True)
        subprocess.run([PG, "down", pg_dir], check=False, capture_output=True)


def sh(script: str) -> tes.Executor:
    return tes.Executor(image=BUSYBOX, command=["sh", "-c", script])


class Flight:
    """Tasks in each phase when a fault comes, and what each must end as."""

    def __init__(self, f: Faults, tag: str) -> None:
        self.f = f
        self.seen = Seen(f.core, f.namespace)
        self.created: str | None = None
        out = f"s3://{f.bucket}/{tag}"
        self.big_key = f"{tag}/big.bin"  # the uploading task's output
        self.running = f.client.create_task(
            tes.Task(name=f"{tag}-running", executors=[sh("echo begun; sleep 25; echo ended")])
        )
        self.steps = f.client.create_task(
            tes.Task(
                name=f"{tag}-steps",
                inputs=[tes.Input(path="/data/in.txt", content="staged\n")],
                outputs=[tes.Output(path="/data/out.txt", url=f"{out}/out.txt")],
                executors=[sh("cat /data/in.txt"), sh("sleep 20; echo second > /data/out.txt; echo two")],
            )
        )
        self.staging = f.client.create_task(
            tes.Task(
                name=f"{tag}-staging",
                inputs=[tes.Input(path="/data/big.bin", url=f"s3://{f.bucket}/big.bin")],
                executors=[sh("wc -c < /data/big.bin")],
            )
        )
        self.uploading = f.client.create_task(
            tes.Task(
                name=f"{tag}-uploading",
                outputs=[tes.Output(path="/data/big.bin", url=f"s3://{f.bucket}/{self.big_key}")],
                executors=[sh(f"dd if=/dev/zero of=/data/big.bin bs=1M count={BIG >> 20}; echo written")],
            )
        )
        wait_until(self._in_each_phase, timeout=120, interval=0.5, what="a task in each phase")

    def _in_each_phase(self) -> bool:
        staging = container_state(self.f, self.staging, STAGE_IN)
        uploading = container_state(self.f, self.uploading, STAGE_OUT)
        assert staging != "terminated", "the input was staged before the fault came"
        assert uploading != "terminated", "the output was uploaded before the fault came"
        return (
            executor_started(self.f, self.running)
            and executor_started(self.f, self.steps)
            and staging == "running"
            and uploading == "running"
        )

    def in_flight(self) -> list[str]:
        return [self.running, self.steps, self.staging, self.uploading]

    def ids(self) -> list[str]:
        return [*self.in_flight(), *([self.created] if self.created else [])]

    def late(self) -> None:
        """A task created while the fault lasts."""
        self.created = self.f.client.create_task(tes.Task(name="late", executors=[sh("echo late")]))

    def ended(self, timeout: float = 300) -> dict[str, tes.Task]:
        ids = self.ids()

        def all_ended() -> dict[str, tes.Task] | None:
            tasks = {t: self.f.client.get_task(t, view="FULL") for t in ids}
            return tasks if all(task.state in TERMINAL for task in tasks.values()) else None

        tasks: dict[str, tes.Task] = wait_until(
            all_ended, timeout=timeout, interval=1, what="every task ended"
        )
        for task_id, task in tasks.items():
            history = self.f.history(task_id)
            assert sum(h in TERMINAL for h in history) == 1, (task_id, history)
            lines = task.logs[0].system_logs or []
            assert len(lines) == len(set(lines)), f"a line recorded twice: {lines}"
        return tasks

    def completed(self, tasks: dict[str, tes.Task]) -> None:
        running, steps = tasks[self.running], tasks[self.steps]
        assert running.state == "COMPLETE", running.logs[0].system_logs
        assert running.logs[0].logs[0].stdout == "begun\nended\n"
        assert steps.state == "COMPLETE", (steps.logs[0], statuses(self.f, self.steps))
        assert [e.stdout for e in steps.logs[0].logs] == ["staged\n", "two\n"]
        assert [e.exit_code for e in steps.logs[0].logs] == [0, 0]
        assert [int(o.size_bytes) for o in steps.logs[0].outputs] == [7]
        staging, uploading = tasks[self.staging], tasks[self.uploading]
        assert staging.state == "COMPLETE", staging.logs[0].system_logs
        assert staging.logs[0].logs[0].stdout.strip() == str(BIG)
        assert uploading.state == "COMPLETE", uploading.logs[0].system_logs
        assert uploading.logs[0].logs[0].stdout.endswith("written\n")
        assert [int(o.size_bytes) for o in uploading.logs[0].outputs] == [BIG]
        head = self.f.s3.client().head_object(Bucket=self.f.bucket, Key=self.big_key)
        assert head["ContentLength"] == BIG
        if self.created:
            late = tasks[self.created]
            assert late.state == "COMPLETE", late.logs[0].system_logs
            assert late.logs[0].logs[0].stdout == "late\n"

    def left_nothing(self) -> None:
        ids = self.ids()
        wait_until(
            lambda: all(not self.f.pods(t) and not self.f.jobs(t) for t in ids),
            timeout=TTL + 120,
            interval=2,
            what="no Pod or Job left after the TTL",
        )
        self.seen.close()
        self.seen.once(ids)


def ended(f: Faults, task_id: str) -> tes.Task | None:
    task = f.client.get_task(task_id, view="FULL")
    return task if task.state in TERMINAL else None


def container_state(f: Faults, task_id: str, name: str) -> str | None:
    """`waiting`, `running` or `terminated`: the state of the task Pod's init container `name`."""
    for pod in f.pods(task_id):
        for status in pod.status.init_container_statuses or []:
            if status.name == name:
                return next((s for s in ("terminated", "running", "waiting") if getattr(status.state, s)), "")
    return None


def statuses(f: Faults, task_id: str) -> list[Any]:
    """The init container statuses of the task's Pod, while it is there: what a failure message shows."""
    return [pod.status.init_container_statuses for pod in f.pods(task_id)]


def executor_started(f: Faults, task_id: str) -> bool:
    return container_state(f, task_id, "executor-0") in ("running", "terminated")


def test_the_kubelet_restarted_within_the_grace_lets_every_task_finish(faults: Faults) -> None:
    flight = Flight(faults, "kubelet-quick")
    with stopped("kubelet"):
        flight.late()
        time.sleep(10)
    flight.completed(flight.ended())
    assert ready(faults.core) == "True"
    flight.left_nothing()


def test_containerd_restarted_while_executors_run_ends_no_task_wrongly(faults: Faults) -> None:
    flight = Flight(faults, "containerd")
    with stopped("containerd"):
        flight.late()
        time.sleep(8)
    flight.completed(flight.ended())
    flight.left_nothing()


def test_postgresql_unreachable_for_30_s_while_the_recorders_write(faults: Faults) -> None:
    flight = Flight(faults, "postgres")
    subprocess.run([PG, "stop", faults.pg_dir], check=True, capture_output=True)
    try:
        refused = httpx.get(f"{faults.server.tes}/tasks/{flight.running}", timeout=10)
        assert refused.status_code == 503, refused.text
        created = httpx.post(
            f"{faults.server.tes}/tasks",
            json={"executors": [{"image": BUSYBOX, "command": ["true"]}]},
            timeout=10,
        )
        assert created.status_code == 503, created.text
        time.sleep(30)
    finally:
        subprocess.run([PG, "up", faults.pg_dir, faults.pg_port], check=True, capture_output=True)
    tasks = flight.ended()
    flight.completed(tasks)
    for task_id in flight.in_flight():
        history = faults.history(task_id)
        assert history == ["INITIALIZING", "RUNNING", "COMPLETE"], history
    flight.left_nothing()


def test_an_evicted_task_pod_is_preempted_with_the_clusters_words(faults: Faults) -> None:
    task_id = faults.client.create_task(tes.Task(executors=[sh("echo begun; sleep 600")]))
    wait_until(
        lambda: executor_started(faults, task_id), timeout=120, interval=0.5, what="the executor running"
    )
    (pod,) = faults.pods(task_id)
    faults.core.create_namespaced_pod_eviction(
        pod.metadata.name,
        faults.namespace,
        {"metadata": {"name": pod.metadata.name, "namespace": faults.namespace}},
    )
    task = wait_until(lambda: ended(faults, task_id), timeout=120, interval=0.5, what="the task ended")
    assert task.state == "PREEMPTED", task.logs[0].system_logs
    assert any("Eviction API" in line for line in task.logs[0].system_logs), task.logs[0].system_logs
    assert sum(h in TERMINAL for h in faults.history(task_id)) == 1
    wait_until(
        lambda: not faults.pods(task_id) and not faults.jobs(task_id),
        timeout=TTL + 120,
        interval=2,
        what="no Pod or Job left",
    )


def test_the_kubelet_gone_past_the_grace_preempts_its_tasks_and_nothing_runs_twice(faults: Faults) -> None:
    flight = Flight(faults, "kubelet-gone")
    began = time.monotonic()
    with stopped("kubelet"):
        wait_until(lambda: ready(faults.core) != "True", timeout=180, interval=2, what="the node not ready")
        not_ready = time.monotonic() - began
        tasks = flight.ended(timeout=180)
        took = time.monotonic() - began
    for task_id in flight.in_flight():
        lines = tasks[task_id].logs[0].system_logs
        assert tasks[task_id].state == "PREEMPTED", (task_id, lines)
        assert any("became unavailable" in line for line in lines), lines
    print(f"[kubelet gone] node not ready after {not_ready:.0f} s; tasks ended {took:.0f} s after the stop")
    wait_until(lambda: ready(faults.core) == "True", timeout=120, interval=1, what="the node ready again")
    flight.left_nothing()
    # Back, the kubelet started nothing again, and nothing was written after the end.
    for task_id in flight.in_flight():
        assert faults.client.get_task(task_id, view="FULL").state == "PREEMPTED"
        assert sum(h in TERMINAL for h in faults.history(task_id)) == 1


def test_the_control_plane_restarted_while_tasks_queue_run_and_cancel(faults: Faults) -> None:
    """The apiserver, etcd and the controllers down for 20 s: a task created meanwhile waits QUEUED
    (tctl makes its Job once the apiserver is back), a cancel sent meanwhile completes after it, the
    running tasks finish; tctl's leadership comes back by itself, and makes no Job twice."""
    flight = Flight(faults, "control-plane")
    doomed = faults.client.create_task(tes.Task(name="doomed", executors=[sh("sleep 600")]))
    wait_until(
        lambda: executor_started(faults, doomed),
        timeout=120,
        interval=0.5,
        what="the doomed executor running",
    )
    with stopped("control-plane"):
        flight.late()
        faults.client.cancel_task(doomed)
        assert faults.client.get_task(doomed).state == "CANCELING"
        assert faults.client.get_task(flight.created).state == "QUEUED"
        time.sleep(20)
    flight.completed(flight.ended(timeout=300))
    canceled = wait_until(lambda: ended(faults, doomed), timeout=120, interval=0.5, what="the cancel done")
    assert canceled.state == "CANCELED", canceled.logs[0].system_logs
    assert sum(h in TERMINAL for h in faults.history(doomed)) == 1
    flight.left_nothing()
    assert not faults.pods(doomed)
    flight.seen.once([doomed])  # no Job made twice, though tctl lost the apiserver for 20 s
