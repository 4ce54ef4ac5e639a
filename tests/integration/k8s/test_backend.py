"""The Kubernetes backend end to end on the test cluster: the real API creates TaskPods, kwok plays
the kubelet (outcomes through each container's KWOK_* env), and one `poiesis trec` process per Pod
records what happens, with a token bound to the task's own ServiceAccount. The Cluster contract
(tests/contracts/cluster.py) runs here too, through `KubeRuns`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import tes
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from poiesis.adapters.sqlalchemy.engine import create_engine
from poiesis.adapters.sqlalchemy.store import SqlAlchemyTaskStore
from tests.conftest import fresh_postgres_url_sync
from tests.contracts.cluster import *  # noqa: F403 - the Cluster contract's tests, collected here
from tests.integration.k8s.conftest import wait_until
from tests.support.pods import executor_running
from tests.support.postgres import free_port
from tests.support.recorders import InProcessRecorders, Recorders, service_account_token, token_kubeconfig
from tests.support.server import Server, running_server

pytestmark = pytest.mark.postgres
TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"}
LABEL = "poiesis.io/task"


@dataclass
class Backend:
    server: Server
    client: tes.HTTPClient
    recorders: Any
    namespace: str
    database_url: str
    core: Any
    batch: Any
    work: Path
    env: dict[str, str]
    tctls: dict[str, subprocess.Popen[bytes]]
    metrics_ports: dict[str, int] = field(default_factory=dict)
    """Each replica's /metrics port (a replica restarted keeps its port)."""

    def tctl_metrics(self, name: str) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_ports[name]}/metrics", timeout=5).text

    def start_tctl(self, name: str) -> None:
        with (self.work / f"{name}.log").open("ab") as log:
            self.tctls[name] = subprocess.Popen(
                [sys.executable, "-m", "poiesis.entrypoints.cli", "tctl"],
                env=os.environ
                | self.env
                | {"POIESIS_DATABASE_URL": self.database_url, "POIESIS_POD_NAME": name}
                | {"POIESIS_PORT": str(self.metrics_ports.setdefault(name, free_port()))},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def leader(self) -> str | None:
        try:
            lease = client.CoordinationV1Api(self.core.api_client).read_namespaced_lease(
                "poiesis-tctl", self.namespace
            )
        except ApiException:
            return None
        return lease.spec.holder_identity or None

    def tctl_log(self) -> str:
        return "".join((self.work / f"{name}.log").read_text() for name in self.tctls)

    def wait(self, task_id: str, timeout: float = 60) -> tes.Task:
        return wait_until(
            lambda: (t := self.client.get_task(task_id, view="FULL")).state in TERMINAL and t,
            timeout=timeout,
            what=f"task {task_id} to end",
        )

    def pods(self, task_id: str) -> list[Any]:
        return self.core.list_namespaced_pod(self.namespace, label_selector=f"{LABEL}={task_id}").items

    def history(self, task_id: str) -> list[str]:
        async def read() -> list[str]:
            engine = create_engine(self.database_url, pool_size=0)
            try:
                moves = await SqlAlchemyTaskStore(engine, reader=engine).history(task_id)
            finally:
                await engine.dispose()
            return [str(m.target) for m in moves]

        return asyncio.run(read())


@contextmanager
def fresh_namespace(api_client: client.ApiClient) -> Iterator[str]:
    core: Any = client.CoreV1Api(api_client)
    name = f"b-{uuid.uuid4().hex[:10]}"
    core.create_namespace({"metadata": {"name": name}})
    wait_until(lambda: core.list_namespaced_service_account(name).items, timeout=30, what="default account")
    try:
        yield name
    finally:
        core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="module")
def namespace(api_client: client.ApiClient) -> Iterator[str]:
    with fresh_namespace(api_client) as name:
        yield name


@contextmanager
def backend(
    api_client: client.ApiClient,
    kubeconfig: str,
    namespace: str,
    database_url: str,
    work: Path,
    recorders: type[Recorders] | type[InProcessRecorders] | None = Recorders,
    tctl: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    **pods: Any,
) -> Iterator[Backend]:
    """The API (and with it the trec grants), a recorder per Pod (unless `recorders` is None), and,
    given `tctl` settings, two `poiesis tctl` replicas; `env`: more settings for the API and tctl."""
    settings = {
        "namespace": namespace,
        "storage_class": "kwok-volume",
        "ttl_seconds_after_finished": 30,
        "image": "poiesis:test",
    } | pods
    config = work / "poiesis.toml"
    config.write_text(
        f'backend = "kubernetes"\nkubeconfig = "{kubeconfig}"\n[kubernetes]\n'
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items() if not isinstance(v, dict))
        + "".join(
            f"[kubernetes.{k}]\n"
            + "".join(f"{kk} = {json.dumps(vv)}\n" for kk, vv in v.items() if not isinstance(vv, dict))
            + "".join(
                f"[kubernetes.{k}.{kk}]\n" + "".join(f"{n} = {json.dumps(x)}\n" for n, x in vv.items())
                for kk, vv in v.items()
                if isinstance(vv, dict)
            )
            for k, v in settings.items()
            if isinstance(v, dict)
        )
        + ("[tctl]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in tctl.items()) if tctl else "")
    )
    env = {"POIESIS_CONFIG": str(config), "POIESIS_LOG_FORMAT": "text"} | (env or {})
    with (
        running_server("api", database_url, work, env) as server,
        (
            recorders(api_client, kubeconfig, namespace, database_url, work)
            if recorders
            else contextlib.nullcontext()
        ) as running_recorders,
    ):
        running = Backend(
            server=server,
            client=tes.HTTPClient(server.url, timeout=10),
            recorders=running_recorders,
            namespace=namespace,
            database_url=database_url,
            core=client.CoreV1Api(api_client),
            batch=client.BatchV1Api(api_client),
            work=work,
            env=env,
            tctls={},
        )
        try:
            if tctl is not None:
                for name in ("tctl-0", "tctl-1"):
                    running.start_tctl(name)
            yield running
        finally:
            for process in running.tctls.values():
                if process.poll() is None:
                    process.terminate()
            for process in running.tctls.values():
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()


@pytest.fixture(scope="module")
def database_url(postgres_server: str, postgres_template: str) -> str:
    return fresh_postgres_url_sync(postgres_server, postgres_template)


@pytest.fixture(scope="module")
def k8s(
    api_client: client.ApiClient,
    kubeconfig: str,
    namespace: str,
    database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Backend]:
    with backend(api_client, kubeconfig, namespace, database_url, tmp_path_factory.mktemp("k8s")) as running:
        yield running


def ex(name: str, **env: str) -> tes.Executor:
    return tes.Executor(image=f"registry.example/{name}:1", command=[name, "--run"], env=env or None)


class KubeRuns:
    """The Cluster contract's view of this backend: kwok plays each container as its KWOK_* env
    says, and runs no program, so there is no output to keep."""

    keeps_output = False

    def __init__(self, k8s: Backend) -> None:
        self.k8s = k8s
        self.client = k8s.client

    def exits(
        self, code: int, *, stdout: str = "", stderr: str = "", ignore_error: bool = False
    ) -> tes.Executor:
        if ignore_error:
            # Under ignore_error the launcher exits 0 and puts the real code in the termination message.
            return tes.Executor(
                image="registry.example/b:1",
                command=["b"],
                ignore_error=True,
                env={"KWOK_EXIT_CODE": "0", "KWOK_MESSAGE": f"exit_code={code}"},
            )
        return ex("step", KWOK_EXIT_CODE=str(code)) if code else ex("step")

    def hangs(self) -> tes.Executor:
        return ex("hang", KWOK_HANG="true")

    def wait(self, task_id: str, timeout: float = 60) -> tes.Task:
        return self.k8s.wait(task_id, timeout)

    def executor_running(self, task_id: str, index: int) -> bool:
        return executor_running(self.k8s.pods(task_id), index)

    def left_nothing(self, task_id: str) -> None:
        selector = f"{LABEL}={task_id}"
        assert self.k8s.pods(task_id) == []
        assert self.k8s.batch.list_namespaced_job(self.k8s.namespace, label_selector=selector).items == []
        core, namespace = self.k8s.core, self.k8s.namespace
        wait_until(
            lambda: (
                not core.list_namespaced_config_map(namespace, label_selector=selector).items
                and not core.list_namespaced_service_account(namespace, label_selector=selector).items
            ),
            what="the owned objects collected",
        )


@pytest.fixture(scope="module")
def runs(k8s: Backend) -> KubeRuns:
    return KubeRuns(k8s)


def test_a_three_executor_task_with_inputs_and_outputs(k8s: Backend) -> None:
    task_id = k8s.client.create_task(
        tes.Task(
            inputs=[
                tes.Input(path="/data/in/a.txt", url="s3://bucket/a.txt"),
                tes.Input(path="/data/in/b.txt", url="s3://bucket/b.txt"),
                tes.Input(path="/ref/genome/x.fa", url="s3://bucket/x.fa"),
            ],
            executors=[ex("align"), ex("sort"), ex("call")],
            outputs=[tes.Output(path="/data/out/calls.vcf", url="s3://bucket/out/calls.vcf")],
            volumes=["/scratch"],
        )
    )
    pod = wait_until(lambda: (p := k8s.pods(task_id)) and p[0], what="the task's Pod")
    report = k8s.recorders.work / pod.metadata.name / "volume" / ".poiesis" / "outputs.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(
        json.dumps(
            {
                "outputs": [
                    {"url": "s3://bucket/out/calls.vcf", "path": "/data/out/calls.vcf", "size_bytes": "42"}
                ]
            }
        )
    )
    task = k8s.wait(task_id)
    assert task.state == "COMPLETE"
    assert [log.exit_code for log in task.logs[0].logs] == [0, 0, 0]
    assert [(o.url, int(o.size_bytes)) for o in task.logs[0].outputs] == [("s3://bucket/out/calls.vcf", 42)]
    assert k8s.history(task_id) == ["INITIALIZING", "RUNNING", "COMPLETE"]  # from QUEUED

    spec = pod.spec
    names = [c.name for c in spec.init_containers]
    assert names == ["trec", "setup", "tif", "executor-0", "executor-1", "executor-2", "tof"]
    assert spec.init_containers[0].restart_policy == "Always"
    assert spec.automount_service_account_token is False
    executor = spec.init_containers[3]
    mounts = {m.mount_path: m.sub_path for m in executor.volume_mounts if m.name == "task-volume"}
    assert mounts == {
        "/data/in": "data/in",
        "/data/out": "data/out",
        "/ref/genome": "ref/genome",
        "/scratch": "scratch",
    }
    for container in spec.init_containers[1:]:
        assert not any(e.name == "POIESIS_DATABASE_URL" for e in container.env or [])
        assert not any("token" in m.name for m in container.volume_mounts or [])
    selector = f"{LABEL}={task_id}"
    assert len(k8s.batch.list_namespaced_job(k8s.namespace, label_selector=selector).items) == 1
    assert len(k8s.pods(task_id)) == 1
    claims = k8s.core.list_namespaced_persistent_volume_claim(k8s.namespace).items
    assert [c.metadata.name for c in claims if c.metadata.labels.get(LABEL) == task_id] == [
        f"{pod.metadata.name}-task-volume"
    ]


def test_an_executor_without_a_shell_redirects_through_the_launcher(k8s: Backend) -> None:
    task_id = k8s.client.create_task(
        tes.Task(
            executors=[
                tes.Executor(
                    image="gcr.io/distroless/static:nonroot",
                    command=["/app", "--x"],
                    stdout="/data/out/app.log",
                    stdin="/data/in/x",
                )
            ],
            inputs=[tes.Input(path="/data/in/x", content="x")],
        )
    )
    pod = wait_until(lambda: (p := k8s.pods(task_id)) and p[0], what="the task's Pod")
    executor = next(c for c in pod.spec.init_containers if c.name == "executor-0")
    assert executor.command[0] == "/tes/bin/launcher"
    assert executor.command[-3:] == ["--", "/app", "--x"]
    assert executor.command[3:5] == ["--stdout", "/data/out/app.log"] or "--stdout" in executor.command
    assert not any(part in ("sh", "/bin/sh", "-c") for part in executor.command)
    assert k8s.wait(task_id).state == "COMPLETE"


def test_trec_token_reads_its_own_pod_and_log_and_nothing_else(
    k8s: Backend, kubeconfig: str, tmp_path: Path
) -> None:
    ids = [k8s.client.create_task(tes.Task(executors=[ex("hang", KWOK_HANG="true")])) for _ in range(2)]
    pods = [wait_until(lambda t=t: (p := k8s.pods(t)) and p[0], what="Pod") for t in ids]
    token = service_account_token(k8s.core, k8s.namespace, f"tes-{ids[0]}")
    own: Any = client.CoreV1Api(
        __import__("kubernetes").config.new_client_from_config(
            config_file=str(token_kubeconfig(kubeconfig, token, tmp_path / "kc"))
        )
    )

    def status(call: Any) -> int:
        try:
            call()
        except ApiException as exc:
            return int(exc.status)
        return 200

    name = pods[0].metadata.name
    wait_until(lambda: status(lambda: own.read_namespaced_pod(name, k8s.namespace)) == 200, what="the grant")
    # authorised (kwok may have no log to serve, but the answer is not 403)
    assert status(lambda: own.read_namespaced_pod_log(name, k8s.namespace, container="trec")) != 403
    for forbidden in (
        lambda: own.read_namespaced_pod(pods[1].metadata.name, k8s.namespace),
        lambda: own.read_namespaced_pod_log(pods[1].metadata.name, k8s.namespace, container="trec"),
        lambda: own.list_namespaced_pod(k8s.namespace),
        lambda: own.list_namespaced_secret(k8s.namespace),
    ):
        with pytest.raises(ApiException) as denied:
            forbidden()
        assert denied.value.status == 403
    for task_id in ids:
        k8s.client.cancel_task(task_id)
        assert k8s.wait(task_id).state == "CANCELED"


def test_the_stage_in_filer_fails(
    api_client: client.ApiClient,
    kubeconfig: str,
    namespace: str,
    database_url: str,
    tmp_path: Path,
) -> None:
    line = "input 0 (/data/in/x) from s3://bucket/missing: not found"
    filer = {"KWOK_EXIT_CODE": "1", "KWOK_MESSAGE": line}
    with backend(api_client, kubeconfig, namespace, database_url, tmp_path, filer_env=filer) as failing:
        task_id = failing.client.create_task(
            tes.Task(inputs=[tes.Input(path="/data/in/x", url="s3://bucket/missing")], executors=[ex("a")])
        )
        task = failing.wait(task_id)
    assert task.state == "SYSTEM_ERROR"
    assert line in task.logs[0].system_logs
    assert not task.logs[0].logs


def test_two_hundred_tasks_reach_the_right_end_and_leave_nothing_behind(
    api_client: client.ApiClient,
    kubeconfig: str,
    database_url: str,
    tmp_path: Path,
) -> None:
    # A namespace of its own: the module's backend (its API and a recorder process per Pod) watches
    # the shared one, and would start 200 more recorder processes on two cores.
    with (
        fresh_namespace(api_client) as namespace,
        backend(
            api_client,
            kubeconfig,
            namespace,
            database_url,
            tmp_path,
            InProcessRecorders,
            ttl_seconds_after_finished=30,
        ) as k,
    ):
        ids = [
            k.client.create_task(
                tes.Task(executors=[ex("a"), ex("b", KWOK_EXIT_CODE=str(3 * (n % 2)))], tags={"batch": "200"})
            )
            for n in range(200)
        ]
        states: dict[str, str] = {}
        deadline = time.monotonic() + 600
        while len(states) < len(ids):
            assert time.monotonic() < deadline, f"{len(states)} of 200 ended; {k.recorders.failures[:3]}"
            for task_id in ids:
                if task_id not in states and (s := k.client.get_task(task_id).state) in TERMINAL:
                    states[task_id] = s
            time.sleep(1)
        assert [states[t] for t in ids] == [
            "COMPLETE" if n % 2 == 0 else "EXECUTOR_ERROR" for n in range(200)
        ]
        assert k.recorders.failures == []
        owned = set(ids)

        def leftovers() -> list[str]:
            found = []
            for kind, items in (
                ("job", k.batch.list_namespaced_job(namespace).items),
                ("pod", k.core.list_namespaced_pod(namespace).items),
                ("configmap", k.core.list_namespaced_config_map(namespace).items),
                ("serviceaccount", k.core.list_namespaced_service_account(namespace).items),
                ("claim", k.core.list_namespaced_persistent_volume_claim(namespace).items),
            ):
                found += [
                    f"{kind}/{i.metadata.name}"
                    for i in items
                    if (i.metadata.labels or {}).get(LABEL) in owned
                ]
            return found

        wait_until(
            lambda: not leftovers(), timeout=180, interval=2, what="every object collected after the TTL"
        )
