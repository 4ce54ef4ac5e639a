"""Faults on the real node, with tasks in flight in each phase (an executor running, the next to
start, outputs to upload, one just created): the kubelet restarted within the node's grace and
stopped past it, containerd restarted, PostgreSQL unreachable for 30 s while the recorders write,
a Pod evicted. Each test asserts every task's end state, its executors' output and exit codes, its
`system_logs` reason, a history with one terminal state, and that no Pod or Job is left once the
Job's TTL has passed.

The daemons are stopped and started by `scripts/real-node stop|start kubelet|containerd`, as a
crash or an upgrade would: their containers keep running meanwhile."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import tes
from kubernetes import client

from poiesis.adapters.sqlalchemy.engine import create_engine
from poiesis.adapters.sqlalchemy.store import SqlAlchemyTaskStore
from tests.integration.realnode.test_taskpods import BUSYBOX, LABEL, TERMINAL, Node, namespace, tctl
from tests.support import postgres, storage
from tests.support.realnode import database_secret, write_config
from tests.support.server import running_server

pytestmark = [pytest.mark.postgres, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

ROOT = Path(__file__).resolve().parents[3]
REAL_NODE = str(ROOT / "scripts" / "real-node")
PG = str(ROOT / "scripts" / "postgres")
NODE = "rn-node-0"
TTL = 20
TOLERATED = 5  # seconds a task Pod stays on a node that is not ready or unreachable


@dataclass
class Faults(Node):
    database_url: str = ""
    pg_dir: str = ""
    pg_port: str = ""
    created: list[str] = field(default_factory=list)

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


def daemon(action: str, name: str) -> None:
    subprocess.run([REAL_NODE, action, name], check=True, capture_output=True, timeout=60)


def ready(core: Any) -> str:
    conditions = core.read_node(NODE).status.conditions or []
    return next((c.status for c in conditions if c.type == "Ready"), "Unknown")


def wait_for(what: str, check: Any, timeout: float, pause: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(pause)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


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
    endpoints = (
        '[[endpoint]]\nurl = "s3://"\noptions = { '
        + ", ".join(f'{k} = "{v}"' for k, v in s3_server.options().items())
        + " }\n"
    )
    tolerations = "".join(
        f'[[kubernetes.tolerations]]\nkey = "node.kubernetes.io/{taint}"\noperator = "Exists"\n'
        f'effect = "NoExecute"\ntolerationSeconds = {TOLERATED}\n'
        for taint in ("not-ready", "unreachable")
    )
    try:
        with namespace(core) as space:
            database_secret(core, space, database_url)
            core.create_namespaced_secret(
                space, {"metadata": {"name": "poiesis-storage"}, "stringData": {"endpoints.toml": endpoints}}
            )
            config = write_config(
                work / "poiesis.toml",
                real_kubeconfig,
                space,
                api_server,
                tolerations
                + "[tctl]\nstart_timeout_seconds = 60\nended_grace_seconds = 5\nresync_seconds = 2\n",
                storage_secret="poiesis-storage",
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
        out = f"s3://{f.bucket}/{tag}"
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
        wait_for(
            "both Pods running", lambda: all(executor_started(f, t) for t in (self.running, self.steps)), 120
        )

    def late(self) -> None:
        """A task created while the fault lasts."""
        self.created = self.f.client.create_task(tes.Task(name="late", executors=[sh("echo late")]))

    def ended(self, timeout: float = 300) -> dict[str, tes.Task]:
        ids = [self.running, self.steps, *([self.created] if hasattr(self, "created") else [])]

        def all_ended() -> dict[str, tes.Task] | None:
            tasks = {t: self.f.client.get_task(t, view="FULL") for t in ids}
            return tasks if all(task.state in TERMINAL for task in tasks.values()) else None

        tasks: dict[str, tes.Task] = wait_for("every task ended", all_ended, timeout, pause=1)
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
        assert steps.state == "COMPLETE", steps.logs[0].system_logs
        assert [e.stdout for e in steps.logs[0].logs] == ["staged\n", "two\n"]
        assert [e.exit_code for e in steps.logs[0].logs] == [0, 0]
        assert [int(o.size_bytes) for o in steps.logs[0].outputs] == [7]

    def left_nothing(self) -> None:
        ids = [self.running, self.steps, *([self.created] if hasattr(self, "created") else [])]
        wait_for(
            "no Pod or Job left after the TTL",
            lambda: all(not self.f.pods(t) and not self.f.jobs(t) for t in ids),
            TTL + 120,
            pause=2,
        )


def ended(f: Faults, task_id: str) -> tes.Task | None:
    task = f.client.get_task(task_id, view="FULL")
    return task if task.state in TERMINAL else None


def executor_started(f: Faults, task_id: str) -> bool:
    for pod in f.pods(task_id):
        for status in pod.status.init_container_statuses or []:
            if status.name == "executor-0" and (status.state.running or status.state.terminated):
                return True
    return False


def test_the_kubelet_restarted_within_the_grace_lets_every_task_finish(faults: Faults) -> None:
    flight = Flight(faults, "kubelet-quick")
    daemon("stop", "kubelet")
    try:
        flight.late()
        time.sleep(10)
    finally:
        daemon("start", "kubelet")
    tasks = flight.ended()
    flight.completed(tasks)
    assert tasks[flight.created].state == "COMPLETE"
    assert tasks[flight.created].logs[0].logs[0].stdout == "late\n"
    assert ready(faults.core) == "True"
    flight.left_nothing()


def test_containerd_restarted_while_executors_run_ends_no_task_wrongly(faults: Faults) -> None:
    flight = Flight(faults, "containerd")
    daemon("stop", "containerd")
    try:
        flight.late()
        time.sleep(8)
    finally:
        daemon("start", "containerd")
    tasks = flight.ended()
    flight.completed(tasks)
    assert tasks[flight.created].state == "COMPLETE", tasks[flight.created].logs[0].system_logs
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
    for task_id in (flight.running, flight.steps):
        history = faults.history(task_id)
        assert history == ["INITIALIZING", "RUNNING", "COMPLETE"], history
    flight.left_nothing()


def test_an_evicted_task_pod_is_preempted_with_the_clusters_words(faults: Faults) -> None:
    task_id = faults.client.create_task(tes.Task(executors=[sh("echo begun; sleep 600")]))
    wait_for("the executor running", lambda: executor_started(faults, task_id), 120)
    (pod,) = faults.pods(task_id)
    faults.core.create_namespaced_pod_eviction(
        pod.metadata.name,
        faults.namespace,
        {"metadata": {"name": pod.metadata.name, "namespace": faults.namespace}},
    )
    task = wait_for("the task ended", lambda: ended(faults, task_id), 120)
    assert task.state == "PREEMPTED", task.logs[0].system_logs
    assert any("Eviction API" in line for line in task.logs[0].system_logs), task.logs[0].system_logs
    assert sum(h in TERMINAL for h in faults.history(task_id)) == 1
    wait_for(
        "no Pod or Job left", lambda: not faults.pods(task_id) and not faults.jobs(task_id), TTL + 120, 2
    )


def test_the_kubelet_gone_past_the_grace_preempts_its_tasks_and_nothing_runs_twice(faults: Faults) -> None:
    flight = Flight(faults, "kubelet-gone")
    stopped = time.monotonic()
    daemon("stop", "kubelet")
    try:
        wait_for("the node not ready", lambda: ready(faults.core) != "True", 180, pause=2)
        not_ready = time.monotonic() - stopped
        tasks = flight.ended(timeout=180)
        ended = time.monotonic() - stopped
    finally:
        daemon("start", "kubelet")
    for task_id in (flight.running, flight.steps):
        task = tasks[task_id]
        assert task.state == "PREEMPTED", (task_id, task.logs[0].system_logs)
        assert any("became unavailable" in line for line in task.logs[0].system_logs), task.logs[
            0
        ].system_logs
    print(f"[kubelet gone] node not ready after {not_ready:.0f} s; tasks ended {ended:.0f} s after the stop")
    wait_for("the node ready again", lambda: ready(faults.core) == "True", 120, pause=1)
    flight.left_nothing()
    # Back, the kubelet started nothing again, and nothing was written after the end.
    for task_id in (flight.running, flight.steps):
        assert faults.client.get_task(task_id, view="FULL").state == "PREEMPTED"
        assert sum(h in TERMINAL for h in faults.history(task_id)) == 1


def test_the_control_plane_restarted_while_tasks_queue_run_and_cancel(faults: Faults) -> None:
    """The apiserver, etcd and the controllers down for 20 s: a task created meanwhile waits QUEUED
    (tctl makes its Job once the apiserver is back), a cancel sent meanwhile completes after it, the
    running tasks finish; tctl's leadership comes back by itself."""
    flight = Flight(faults, "control-plane")
    doomed = faults.client.create_task(tes.Task(name="doomed", executors=[sh("sleep 600")]))
    wait_for("the doomed executor running", lambda: executor_started(faults, doomed), 120)
    daemon("stop", "control-plane")
    try:
        flight.late()
        faults.client.cancel_task(doomed)
        assert faults.client.get_task(doomed).state == "CANCELING"
        assert faults.client.get_task(flight.created).state == "QUEUED"
        time.sleep(20)
    finally:
        daemon("start", "control-plane")
    tasks = flight.ended(timeout=300)
    flight.completed(tasks)
    late = tasks[flight.created]
    assert late.state == "COMPLETE", late.logs[0].system_logs
    assert late.logs[0].logs[0].stdout == "late\n"
    canceled = wait_for("the cancel done", lambda: ended(faults, doomed), 120)
    assert canceled.state == "CANCELED", canceled.logs[0].system_logs
    assert sum(h in TERMINAL for h in faults.history(doomed)) == 1
    flight.left_nothing()
    assert not faults.pods(doomed)
