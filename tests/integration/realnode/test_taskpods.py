"""TES tasks on a real kubelet: the Poiesis image built here, `trec` as a real native sidecar with
its real projected token and Role, the static launcher as each executor's entrypoint, containerd
and runc running real containers, the cgroup enforcing memory limits.

Each test prints its timings (POST -> Pod running, last executor's end -> state visible in GET).
"""

from __future__ import annotations

import gc
import json
import shlex
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tes
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream

from tests.conftest import fresh_postgres_url_sync
from tests.contracts.cluster import *  # noqa: F403 - the Cluster contract's tests, collected here
from tests.support import storage
from tests.support.pods import executor_running
from tests.support.postgres import free_port
from tests.support.realnode import database_secret, storage_secret, write_config
from tests.support.recorders import token_kubeconfig
from tests.support.server import Server, running_server

pytestmark = [pytest.mark.postgres, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"}
LABEL = "poiesis.io/task"
BUSYBOX = "poiesis.test/busybox:1"
NOSHELL = "poiesis.test/noshell:1"
PYTHON = "poiesis.test/debian-python:bookworm"


@dataclass
class Node:
    server: Server
    client: tes.HTTPClient
    core: Any
    namespace: str
    s3: storage.S3
    bucket: str

    def wait(self, task_id: str, timeout: float = 120) -> tes.Task:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            task = self.client.get_task(task_id, view="FULL")
            if task.state in TERMINAL:
                return task
            time.sleep(0.2)
        raise AssertionError(f"{task_id} still {task.state}; pods: {self.describe(task_id)}")

    def pods(self, task_id: str) -> list[Any]:
        return self.core.list_namespaced_pod(self.namespace, label_selector=f"{LABEL}={task_id}").items

    def describe(self, task_id: str) -> str:
        return "; ".join(
            f"{p.metadata.name} {p.status.phase} "
            + json.dumps([(s.name, str(s.state)) for s in (p.status.init_container_statuses or [])])[:1500]
            for p in self.pods(task_id)
        )

    def running_after(self, task_id: str, posted: float) -> float:
        """Seconds from the POST (a `time.time()`) until the kubelet started the first executor."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for pod in self.pods(task_id):
                for status in pod.status.init_container_statuses or []:
                    state = status.state.running or status.state.terminated
                    if status.name == "executor-0" and state is not None:
                        return float(state.started_at.timestamp() - posted)
            time.sleep(0.1)
        raise AssertionError(f"the Pod of {task_id} never ran: {self.describe(task_id)}")


@contextmanager
def namespace(core: Any) -> Iterator[str]:
    name = f"rn-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    deadline = time.monotonic() + 30
    while not core.list_namespaced_service_account(name).items:
        assert time.monotonic() < deadline, "no default ServiceAccount"
        time.sleep(0.1)
    try:
        yield name
    finally:
        core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="module")
def node(
    real_api: client.ApiClient,
    real_kubeconfig: str,
    api_server: str,
    postgres_server: str,
    postgres_template: str,
    s3_server: storage.S3,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Node]:
    core: Any = client.CoreV1Api(real_api)
    work = tmp_path_factory.mktemp("realnode")
    database_url = fresh_postgres_url_sync(postgres_server, postgres_template)
    bucket = f"rn-{uuid.uuid4().hex[:8]}"
    s3_server.client().create_bucket(Bucket=bucket)
    with namespace(core) as space:
        database_secret(core, space, database_url)
        secret = storage_secret(core, space, s3_server)
        config = write_config(
            work / "poiesis.toml",
            real_kubeconfig,
            space,
            api_server,
            "[tctl]\nstart_timeout_seconds = 15\nended_grace_seconds = 5\nresync_seconds = 5\n",
            storage_secret=secret,
            ttl_seconds_after_finished=60,
        )
        env = {"POIESIS_CONFIG": str(config), "POIESIS_LOG_FORMAT": "text"}
        with running_server("api", database_url, work, env) as server, tctl(work, env, database_url):
            yield Node(
                server=server,
                client=tes.HTTPClient(server.url, timeout=20),
                core=core,
                namespace=space,
                s3=s3_server,
                bucket=bucket,
            )


@contextmanager
def tctl(work: Path, env: dict[str, str], database_url: str) -> Iterator[None]:
    """One Task Controller, as a process beside the API: the backstop for what trec cannot see.
    Ready once its metrics listen."""
    port = free_port()
    identity = {"POIESIS_DATABASE_URL": database_url, "POIESIS_POD_NAME": "tctl-0", "POIESIS_PORT": str(port)}
    command = [sys.executable, "-m", "poiesis.entrypoints.cli", "tctl"]
    with storage.serving(command, port, work / "tctl.log", env | identity):
        yield


def timings(name: str, node: Node, task_id: str, posted: float, task: tes.Task, seen: float) -> None:
    last_end = max((log.end_time.timestamp() for log in task.logs[0].logs), default=None)
    running = node.running_after(task_id, posted)
    # The state is seen by polling GET every 0.2 s; with outputs it includes their upload.
    ended = f"{seen - last_end:.2f} s" if last_end is not None else "-"
    print(
        f"[{name}] POST -> first executor started {running:.2f} s; last executor end -> state in GET {ended}"
    )


class NodeRuns:
    """The Cluster contract (tests/contracts/cluster.py) on the real node: real containers, real
    output."""

    keeps_output = True

    def __init__(self, node: Node) -> None:
        self.node = node
        self.client = node.client

    def exits(
        self, code: int, *, stdout: str = "", stderr: str = "", ignore_error: bool = False
    ) -> tes.Executor:
        script = f"printf %s {shlex.quote(stdout)}; printf %s {shlex.quote(stderr)} >&2; exit {code}"
        return tes.Executor(image=BUSYBOX, command=["sh", "-c", script], ignore_error=ignore_error or None)

    def hangs(self) -> tes.Executor:
        return tes.Executor(image=BUSYBOX, command=["sleep", "600"])

    def wait(self, task_id: str, timeout: float = 120) -> tes.Task:
        return self.node.wait(task_id, max(timeout, 120))

    def executor_running(self, task_id: str, index: int) -> bool:
        return executor_running(self.node.pods(task_id), index)

    def left_nothing(self, task_id: str) -> None:
        assert self.node.pods(task_id) == []
        jobs = client.BatchV1Api(self.node.core.api_client).list_namespaced_job(
            self.node.namespace, label_selector=f"{LABEL}={task_id}"
        )
        assert jobs.items == []


@pytest.fixture(scope="module")
def runs(node: Node) -> NodeRuns:
    return NodeRuns(node)


def test_three_executors_with_s3_inputs_and_outputs(node: Node) -> None:
    s3 = node.s3.client()
    s3.put_object(Bucket=node.bucket, Key="in/greeting.txt", Body=b"hello from s3\n")
    posted = time.time()
    task_id = node.client.create_task(
        tes.Task(
            name="three",
            inputs=[tes.Input(path="/data/in/greeting.txt", url=f"s3://{node.bucket}/in/greeting.txt")],
            outputs=[
                tes.Output(path="/data/out/result.txt", url=f"s3://{node.bucket}/out/result.txt"),
                tes.Output(path="/data/work/two.txt", url=f"s3://{node.bucket}/out/two.txt"),
            ],
            executors=[
                tes.Executor(
                    image=BUSYBOX,
                    command=["sh", "-c", "tr a-z A-Z < /data/in/greeting.txt > /data/work/upper; echo one"],
                ),
                tes.Executor(
                    image=NOSHELL, command=["/ptool", "echo", "step", "two"], stdout="/data/work/two.txt"
                ),
                tes.Executor(
                    image=PYTHON,
                    command=["python3", "-c", "print(open('/data/work/upper').read().strip() + '!')"],
                    stdout="/data/out/result.txt",
                ),
            ],
            volumes=["/data/work"],
        )
    )
    task = node.wait(task_id)
    seen = time.time()
    assert task.state == "COMPLETE", (task.logs[0].system_logs, node.describe(task_id))
    logs = task.logs[0].logs
    assert [log.exit_code for log in logs] == [0, 0, 0]
    assert [log.stdout.strip() for log in logs] == ["one", "step two", "HELLO FROM S3!"]
    assert logs[1].stderr.strip() == "err:step two"
    for log in logs:
        assert log.start_time <= log.end_time
    assert logs[0].end_time <= logs[1].start_time <= logs[1].end_time <= logs[2].start_time
    # The launcher's own times, to the microsecond, inside the task's.
    assert any(t.microsecond for log in logs for t in (log.start_time, log.end_time)), logs
    assert task.logs[0].start_time <= logs[0].start_time
    assert logs[2].end_time <= task.logs[0].end_time
    result = s3.get_object(Bucket=node.bucket, Key="out/result.txt")["Body"].read()
    assert result == b"HELLO FROM S3!\n"
    sizes = {o.url.rsplit("/", 1)[1]: int(o.size_bytes) for o in task.logs[0].outputs}
    assert sizes == {"result.txt": len(result), "two.txt": len(b"step two\n")}
    timings("three executors", node, task_id, posted, task, seen)


def test_an_executor_that_exits_3_stops_the_task_unless_ignored(node: Node) -> None:
    posted = time.time()
    stop = node.client.create_task(
        tes.Task(
            executors=[
                tes.Executor(image=NOSHELL, command=["/ptool", "exit", "3"]),
                tes.Executor(image=NOSHELL, command=["/ptool", "echo", "never"]),
            ]
        )
    )
    going = node.client.create_task(
        tes.Task(
            executors=[
                tes.Executor(image=NOSHELL, command=["/ptool", "exit", "3"], ignore_error=True),
                tes.Executor(image=NOSHELL, command=["/ptool", "echo", "after"]),
            ]
        )
    )
    stopped = node.wait(stop)
    timings("exit 3", node, stop, posted, stopped, time.time())
    assert stopped.state == "EXECUTOR_ERROR"
    assert [log.exit_code for log in stopped.logs[0].logs] == [3]
    went = node.wait(going)
    assert went.state == "EXECUTOR_ERROR"  # a recorded non-zero exit code ends it so
    assert [log.exit_code for log in went.logs[0].logs] == [3, 0]
    assert went.logs[0].logs[1].stdout.strip() == "after"


def test_redirection_in_an_image_with_no_shell(node: Node) -> None:
    posted = time.time()
    task_id = node.client.create_task(
        tes.Task(
            inputs=[tes.Input(path="/data/in/lines.txt", content="alpha\nbeta\n")],
            executors=[
                tes.Executor(
                    image=NOSHELL,
                    command=["/ptool", "cat"],
                    stdin="/data/in/lines.txt",
                    stdout="/data/work/copy.txt",
                ),
                tes.Executor(image=NOSHELL, command=["/ptool", "cat"], stdin="/data/work/copy.txt"),
            ],
            volumes=["/data/work"],
        )
    )
    task = node.wait(task_id)
    timings("no shell", node, task_id, posted, task, time.time())
    assert task.state == "COMPLETE", (task.logs[0].system_logs, node.describe(task_id))
    assert [log.stdout for log in task.logs[0].logs] == ["alpha\nbeta\n", "alpha\nbeta\n"]


def test_an_executor_over_its_memory_limit_is_oom_killed(node: Node) -> None:
    posted = time.time()
    task_id = node.client.create_task(
        tes.Task(
            executors=[tes.Executor(image=NOSHELL, command=["/ptool", "alloc", "400"])],
            resources=tes.Resources(ram_gb=0.1),
        )
    )
    task = node.wait(task_id)
    timings("OOM", node, task_id, posted, task, time.time())
    assert task.state == "EXECUTOR_ERROR", (task.logs[0].system_logs, node.describe(task_id))
    assert [log.exit_code for log in task.logs[0].logs] == [137]
    assert task.logs[0].metadata["termination_reason"] == "OOMKilled"


def test_cancel_in_the_middle_of_a_long_executor_leaves_nothing(node: Node) -> None:
    posted = time.time()
    task_id = node.client.create_task(
        tes.Task(executors=[tes.Executor(image=NOSHELL, command=["/ptool", "sleep", "600"])])
    )
    node.running_after(task_id, posted)
    node.client.cancel_task(task_id)
    assert node.wait(task_id).state == "CANCELED"
    assert node.pods(task_id) == []
    jobs = client.BatchV1Api(node.core.api_client).list_namespaced_job(
        node.namespace, label_selector=f"{LABEL}={task_id}"
    )
    assert jobs.items == []
    print(f"[cancel] POST -> CANCELED {time.time() - posted:.1f} s")


def test_an_image_that_is_not_on_the_node_is_a_system_error_with_the_kubelets_reason(node: Node) -> None:
    posted = time.time()
    task_id = node.client.create_task(
        tes.Task(executors=[tes.Executor(image="poiesis.test/not-here:1", command=["/x"])])
    )
    task = node.wait(task_id, timeout=180)
    assert task.state == "SYSTEM_ERROR", node.describe(task_id)
    reason = task.logs[0].metadata["termination_reason"]
    assert reason in {"ErrImagePull", "ImagePullBackOff"}
    assert any(reason in line for line in task.logs[0].system_logs)
    print(f"[missing image] POST -> SYSTEM_ERROR {time.time() - posted:.1f} s (start_timeout 15 s)")


def test_trecs_projected_token_reads_its_own_pod_and_nothing_else(
    node: Node, real_kubeconfig: str, tmp_path: Path
) -> None:
    ids = [
        node.client.create_task(
            tes.Task(executors=[tes.Executor(image=NOSHELL, command=["/ptool", "sleep", "60"])])
        )
        for _ in range(2)
    ]
    pods = []
    for task_id in ids:
        node.running_after(task_id, time.time())
        pods.append(node.pods(task_id)[0].metadata.name)
    # The token the kubelet projected into the first task's trec container, read from inside it.
    session = stream(
        node.core.connect_get_namespaced_pod_exec,
        pods[0],
        node.namespace,
        container="trec",
        command=["cat", "/var/run/secrets/kubernetes.io/serviceaccount/token"],
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
        _preload_content=False,
    )
    try:
        session.run_forever(timeout=20)
        token = session.read_stdout().strip()
    finally:
        session.close()
        # The exec stream leaves its TLS socket for the garbage collector: collect it here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            del session
            gc.collect()
    assert token.count(".") == 2, token[:200]
    api = config.new_client_from_config(
        config_file=str(token_kubeconfig(real_kubeconfig, token, tmp_path / "kc"))
    )
    own: Any = client.CoreV1Api(api)
    try:
        assert own.read_namespaced_pod(pods[0], node.namespace).metadata.name == pods[0]
        assert isinstance(own.read_namespaced_pod_log(pods[0], node.namespace, container="trec"), str)
        for forbidden in (
            lambda: own.read_namespaced_pod(pods[1], node.namespace),
            lambda: own.read_namespaced_pod_log(pods[1], node.namespace, container="trec"),
            lambda: own.list_namespaced_pod(node.namespace),
            lambda: own.list_namespaced_secret(node.namespace),
        ):
            with pytest.raises(ApiException) as denied:
                forbidden()
            assert denied.value.status == 403
    finally:
        api.close()
    for task_id in ids:
        node.client.cancel_task(task_id)


def test_a_failed_nextflow_step_still_delivers_its_logs(node: Node) -> None:
    """Nextflow's shape: a work dir whose .command.* and .exitcode files are outputs. The step
    exits 1; its log files reach the work dir (a missing output is skipped), the next executor is
    skipped, and the task is EXECUTOR_ERROR."""
    s3 = node.s3.client()
    work = f"s3://{node.bucket}/work/ab/cdef"
    script = (
        "echo running > /work/.command.log; echo 'boom: no such sample' >&2; echo 1 > /work/.exitcode; exit 1"
    )
    task_id = node.client.create_task(
        tes.Task(
            name="nf-step",
            outputs=[
                tes.Output(path=f"/work/{name}", url=f"{work}/{name}")
                for name in (".command.err", ".command.log", ".exitcode", "result.bam")
            ],
            executors=[
                tes.Executor(image=BUSYBOX, command=["sh", "-c", script], stderr="/work/.command.err"),
                tes.Executor(image=BUSYBOX, command=["sh", "-c", "echo never > /work/never"]),
            ],
            volumes=["/work"],
        )
    )
    task = node.wait(task_id)
    assert task.state == "EXECUTOR_ERROR", (task.logs[0].system_logs, node.describe(task_id))
    assert [log.exit_code for log in task.logs[0].logs] == [1], "the second executor was skipped"
    got = {o.url.rsplit("/", 1)[1] for o in task.logs[0].outputs}
    assert got == {".command.err", ".command.log", ".exitcode"}, "result.bam was never made"
    read = lambda key: s3.get_object(Bucket=node.bucket, Key=f"work/ab/cdef/{key}")["Body"].read()  # noqa: E731
    assert read(".command.err") == b"boom: no such sample\n"
    assert read(".exitcode") == b"1\n"
    assert task.logs[0].logs[0].stderr == "boom: no such sample\n"


def test_an_oom_kill_in_a_task_with_outputs_ends_it_at_once(node: Node) -> None:
    """The kubelet fails an init container reported OOMKilled whatever its exit code: the launcher
    exits non-zero then (no failed mark), so the Pod fails instead of staying Pending for ever. The
    OOM kill is of a child of the executor's shell, which itself exits 0."""
    task_id = node.client.create_task(
        tes.Task(
            outputs=[tes.Output(path="/work/partial.txt", url=f"s3://{node.bucket}/oom/partial.txt")],
            executors=[
                tes.Executor(image=BUSYBOX, command=["sh", "-c", "echo half > /work/partial.txt"]),
                tes.Executor(
                    image=PYTHON,
                    command=[
                        "python3",
                        "-c",
                        "import subprocess; subprocess.run(['python3', '-c', 'b = bytearray(400 << 20)'])",
                    ],
                ),
            ],
            resources=tes.Resources(ram_gb=0.1),
            volumes=["/work"],
        )
    )
    task = node.wait(task_id)
    assert task.state == "EXECUTOR_ERROR", (task.logs[0].system_logs, node.describe(task_id))
    assert [log.exit_code for log in task.logs[0].logs] == [0, 0], "the real code: the shell exited 0"
    assert task.logs[0].metadata.get("termination_reason") == "OOMKilled", node.describe(task_id)
