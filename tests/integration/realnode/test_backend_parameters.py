"""GPUs by `backend_parameters` on the real node: the test advertises an extended resource on the
node's status (`example.com/gpu: 2`, as a device plugin would), the operator maps the key `gpu` to
it, and the real scheduler and kubelet place the tasks: one asking for 1 runs with the limit set,
two asking for 2 run one after the other, one asking for 3 waits with the scheduler's reason in its
FULL view and ends after `unschedulable_timeout_seconds`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import tes
from kubernetes import client

from tests.conftest import fresh_postgres_url_sync
from tests.integration.realnode.test_taskpods import BUSYBOX, LABEL, Node, namespace, tctl
from tests.support.realnode import database_secret, write_config
from tests.support.server import running_server

pytestmark = [pytest.mark.postgres, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
GPU = "example.com/gpu"
NODE = "rn-node-0"
WAITS = 40  # unschedulable_timeout_seconds


def advertise(core: Any, count: int | None) -> None:
    """The node's capacity of GPUs, as a device plugin would report it (None: none at all)."""
    key = GPU.replace("/", "~1")
    if count is None:
        patch: list[dict[str, Any]] = [
            {"op": "remove", "path": f"/status/capacity/{key}"},
        ]
    else:
        patch = [{"op": "add", "path": f"/status/capacity/{key}", "value": str(count)}]
    core.patch_node_status(NODE, patch)  # a list: a JSON patch
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        allocatable = core.read_node(NODE).status.allocatable or {}
        if (allocatable.get(GPU) is None) if count is None else (allocatable.get(GPU) == str(count)):
            return
        time.sleep(0.2)
    raise AssertionError(f"the node never showed {GPU} = {count}: {core.read_node(NODE).status.allocatable}")


@pytest.fixture(scope="module")
def gpus(
    real_api: client.ApiClient,
    real_kubeconfig: str,
    api_server: str,
    postgres_server: str,
    postgres_template: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Node]:
    core: Any = client.CoreV1Api(real_api)
    work = tmp_path_factory.mktemp("gpus")
    database_url = fresh_postgres_url_sync(postgres_server, postgres_template)
    advertise(core, 2)
    try:
        with namespace(core) as space:
            database_secret(core, space, database_url)
            config = write_config(
                work / "poiesis.toml",
                real_kubeconfig,
                space,
                api_server,
                '[kubernetes.backend_parameters.gpu]\nto = "resource"\nname = "example.com/gpu"\nmax = 4\n'
                f"[tctl]\nstart_timeout_seconds = 15\nunschedulable_timeout_seconds = {WAITS}\n"
                "ended_grace_seconds = 5\nresync_seconds = 2\n",
                ttl_seconds_after_finished=60,
            )
            env = {"POIESIS_CONFIG": str(config), "POIESIS_LOG_FORMAT": "text"}
            with running_server("api", database_url, work, env) as server, tctl(work, env, database_url):
                yield Node(server, tes.HTTPClient(server.url, timeout=20), core, space, None, "")  # type: ignore[arg-type]
    finally:
        advertise(core, None)


def gpu_task(count: str, *command: str, strict: bool | None = None) -> tes.Task:
    return tes.Task(
        executors=[tes.Executor(image=BUSYBOX, command=list(command) or ["true"])],
        resources=tes.Resources(backend_parameters={"gpu": count}, backend_parameters_strict=strict),
    )


def executor_limits(node: Node, task_id: str) -> list[dict[str, str]]:
    (pod,) = node.pods(task_id)
    return [c.resources.limits or {} for c in pod.spec.init_containers if c.name.startswith("executor-")]


def test_service_info_shows_the_mapping_and_the_door_refuses_a_count_it_cannot_honour(gpus: Node) -> None:
    info = httpx.get(f"{gpus.server.tes}/service-info").json()
    assert "gpu" in info["tesResources_backend_parameters"]
    assert info["poiesis_backend_parameters"]["gpu"] == {"to": "resource", "name": GPU, "max": 4}
    body = {
        "executors": [{"image": BUSYBOX, "command": ["true"]}],
        "resources": {"backend_parameters": {"gpu": "9"}, "backend_parameters_strict": True},
    }
    refused = httpx.post(f"{gpus.server.tes}/tasks", json=body)
    assert refused.status_code == 400
    assert refused.json()["field"] == "resources.backend_parameters.gpu"


def test_a_task_asking_for_one_gpu_runs_with_the_limit_set(gpus: Node) -> None:
    task_id = gpus.client.create_task(gpu_task("1", "sh", "-c", "echo on a gpu node"))
    task = gpus.wait(task_id)
    assert task.state == "COMPLETE", task
    assert task.logs[0].logs[0].stdout.strip() == "on a gpu node"
    assert executor_limits(gpus, task_id) == [{GPU: "1"}]


def test_two_tasks_asking_for_both_gpus_run_one_after_the_other(gpus: Node) -> None:
    first, second = (gpus.client.create_task(gpu_task("2", "sleep", "4")) for _ in range(2))
    seen: dict[str, set[str]] = {first: set(), second: set()}
    limits: dict[str, list[dict[str, str]]] = {}
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        states = {t: gpus.client.get_task(t).state for t in (first, second)}
        for t, state in states.items():
            seen[t].add(state)
            if t not in limits and gpus.pods(t):
                limits[t] = executor_limits(gpus, t)
        assert set(states.values()) != {"RUNNING"}, "both ran at once on two GPUs"
        if all(s == "COMPLETE" for s in states.values()):
            break
        time.sleep(0.3)
    assert all(gpus.client.get_task(t).state == "COMPLETE" for t in (first, second)), seen
    assert limits[first] == limits[second] == [{GPU: "2"}]
    a, b = sorted(
        (gpus.client.get_task(t, view="FULL").logs[0].logs[0] for t in (first, second)),
        key=lambda log: log.start_time,
    )
    assert a.end_time <= b.start_time, "the second started once the first had given the GPUs back"


def test_a_task_asking_for_more_than_any_node_has_waits_saying_why_then_ends(gpus: Node) -> None:
    posted = time.monotonic()
    task_id = gpus.client.create_task(gpu_task("3"))
    deadline = time.monotonic() + 60
    waiting: list[str] = []
    while time.monotonic() < deadline and not waiting:
        task = gpus.client.get_task(task_id, view="FULL")
        waiting = [
            line for line in (task.logs[0].system_logs if task.logs else None) or [] if "waiting" in line
        ]
        time.sleep(0.5)
    assert waiting, "the scheduler's reason is in the FULL view while it waits"
    assert task.state == "QUEUED"
    assert "Insufficient example.com/gpu" in waiting[0], waiting
    done = gpus.wait(task_id, timeout=WAITS + 60)
    waited = time.monotonic() - posted
    assert done.state == "SYSTEM_ERROR", done
    assert done.logs[0].metadata["termination_reason"] == "Unschedulable"
    assert f"(for {WAITS} s)" in done.logs[0].system_logs[-1]
    assert waited >= WAITS
    jobs = client.BatchV1Api(gpus.core.api_client).list_namespaced_job(
        gpus.namespace, label_selector=f"{LABEL}={task_id}"
    )
    assert jobs.items == [], "its Job was removed"
    print(
        f"[gpus] asked for 3 of 2: SYSTEM_ERROR after {waited:.1f} s (unschedulable_timeout_seconds {WAITS})"
    )
