"""Kueue for real on the test cluster: its controller (v0.17.0, built from the Go module proxy) admits
Poiesis's Jobs within ClusterQueues of CPU, memory and extended-resource quota. Two users
(basic authentication) have a LocalQueue each (`owner_kueue_queues`, everyone else `kueue_queue`),
each on its own ClusterQueue, so one user's flood waits within its own quota and not in front of
the other's task. The API, two tctl replicas and a recorder per Pod run as in the other tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tes
from kubernetes import client

from poiesis.adapters.kubernetes.taskpod import TASK_LABEL
from tests.integration.k8s.conftest import wait_until
from tests.integration.k8s.test_backend import Backend, backend, database_url, ex, namespace
from tests.integration.k8s.test_tctl import TCTL
from tests.support import kueue
from tests.support.server import add_users

pytestmark = pytest.mark.postgres
__all__ = ["database_url", "namespace"]  # fixtures used here

USERS = {"flooder": "flooder-secret-1", "small": "small-secret-22"}
GROUP = "kueue.x-k8s.io"
VERSION = "v1beta2"


def cluster_queue(name: str, cpu: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterQueue",
        "metadata": {"name": name},
        "spec": {
            "namespaceSelector": {},
            "resourceGroups": [
                {
                    "coveredResources": ["cpu", "memory", "example.com/gpu"],
                    "flavors": [
                        {
                            "name": "poiesis-default",
                            "resources": [
                                {"name": "cpu", "nominalQuota": cpu},
                                {"name": "memory", "nominalQuota": "8Gi"},
                                {"name": "example.com/gpu", "nominalQuota": "2"},
                            ],
                        }
                    ],
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def queued(
    api_client: client.ApiClient,
    kubeconfig: str,
    namespace: str,
    database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Backend]:
    reason = kueue.unavailable_reason()
    if reason:
        pytest.skip(reason)
    work: Path = tmp_path_factory.mktemp("kueue")
    custom = client.CustomObjectsApi(api_client)
    with kueue.running_kueue(kubeconfig, work):
        flavor = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ResourceFlavor",
            "metadata": {"name": "poiesis-default"},
        }
        custom.create_cluster_custom_object(GROUP, VERSION, "resourceflavors", flavor)
        # One task of a CPU core fits in each (its Pod asks a little more for Poiesis's containers).
        made = [cluster_queue(f"{namespace}-a", "1500m"), cluster_queue(f"{namespace}-b", "1500m")]
        for body in made:
            custom.create_cluster_custom_object(GROUP, VERSION, "clusterqueues", body)
        for local, cq in (("lab-a", f"{namespace}-a"), ("lab-b", f"{namespace}-b")):
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "LocalQueue",
                "metadata": {"name": local, "namespace": namespace},
                "spec": {"clusterQueue": cq},
            }
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "localqueues", body)
        env = {
            "POIESIS_AUTH": "basic",
            "POIESIS_BASIC_USERS_FILE": str(add_users(work / "users", USERS)),
        }
        pods = {
            "kueue_queue": "lab-b",
            "owner_kueue_queues": {"flooder": "lab-a"},
            "backend_parameters": {"gpu": {"to": "resource", "name": "example.com/gpu", "max": 4}},
        }
        try:
            with backend(
                api_client, kubeconfig, namespace, database_url, work, tctl=TCTL, env=env, **pods
            ) as k:
                wait_until(k.leader, timeout=30, what="a tctl leader")
                yield k
        finally:
            for body in made:
                custom.delete_cluster_custom_object(GROUP, VERSION, "clusterqueues", body["metadata"]["name"])
            custom.delete_cluster_custom_object(GROUP, VERSION, "resourceflavors", "poiesis-default")


def user(k: Backend, name: str) -> tes.HTTPClient:
    return tes.HTTPClient(k.server.url, user=name, password=USERS[name], timeout=10)


def job(k: Backend, task_id: str) -> Any:
    found = k.batch.list_namespaced_job(k.namespace, label_selector=f"{TASK_LABEL}={task_id}").items
    return found[0] if found else None


def admitted(k: Backend, task_id: str) -> bool:
    found = job(k, task_id)
    return found is not None and not found.spec.suspend


def system_logs(c: tes.HTTPClient, task_id: str) -> list[str]:
    return c.get_task(task_id, view="FULL").logs[0].system_logs or []


def hang(**resources: Any) -> tes.Task:
    return tes.Task(executors=[ex("hang", KWOK_HANG="true")], resources=tes.Resources(**resources))


def test_kueue_admits_within_each_groups_quota_and_holds_the_rest_with_its_reason(queued: Backend) -> None:
    flooder, small = user(queued, "flooder"), user(queued, "small")
    flood = [flooder.create_task(hang(cpu_cores=1)) for _ in range(3)]
    wait_until(lambda: admitted(queued, flood[0]), timeout=60, what="the flooder's first admitted")
    assert job(queued, flood[0]).metadata.labels["kueue.x-k8s.io/queue-name"] == "lab-a"
    wait_until(lambda: flooder.get_task(flood[0]).state == "RUNNING", timeout=60, what="running")
    # Over its ClusterQueue's quota: held, QUEUED, with Kueue's words in the FULL view.
    for task_id in flood[1:]:
        assert job(queued, task_id) is not None
        assert not admitted(queued, task_id)
        wait_until(
            lambda t=task_id: any(
                "insufficient" in line and "cpu" in line for line in system_logs(flooder, t)
            ),
            timeout=60,
            what="Kueue's reason in the FULL view",
        )
        assert flooder.get_task(task_id).state == "QUEUED"
    # The other user's queue has its own quota: its task runs beside the flooder's held ones.
    mine = small.create_task(hang(cpu_cores=1))
    wait_until(lambda: admitted(queued, mine), timeout=60, what="the small user's task admitted")
    assert job(queued, mine).metadata.labels["kueue.x-k8s.io/queue-name"] == "lab-b"
    wait_until(
        lambda: small.get_task(mine).state == "RUNNING", timeout=60, what="the small user's task running"
    )

    # A task Kueue has not admitted is cancelled at once: its Job goes, and with it its Workload.
    flooder.cancel_task(flood[2])
    wait_until(lambda: flooder.get_task(flood[2]).state == "CANCELED", timeout=30, what="canceled")
    wait_until(lambda: job(queued, flood[2]) is None, timeout=30, what="its Job gone")
    # The flooder's running task ends: its quota goes to its next task.
    flooder.cancel_task(flood[0])
    wait_until(lambda: admitted(queued, flood[1]), timeout=60, what="the flooder's next admitted")
    wait_until(lambda: flooder.get_task(flood[1]).state == "RUNNING", timeout=60, what="it runs")

    # More of the extended resource than the ClusterQueue has: held, and Kueue names it.
    greedy = small.create_task(
        tes.Task(
            executors=[ex("hang", KWOK_HANG="true")], resources=tes.Resources(backend_parameters={"gpu": "3"})
        )
    )
    wait_until(
        lambda: any("example.com/gpu" in line for line in system_logs(small, greedy)),
        timeout=60,
        what="Kueue's reason naming the GPUs",
    )
    assert small.get_task(greedy).state == "QUEUED"
    executor = job(queued, greedy).spec.template.spec.init_containers
    limits = next(c for c in executor if c.name == "executor-0").resources.limits
    assert limits["example.com/gpu"] == "3"

    for c, task_id in ((flooder, flood[1]), (small, mine), (small, greedy)):
        c.cancel_task(task_id)
    for c, task_id in ((flooder, flood[1]), (small, mine), (small, greedy)):
        wait_until(lambda c=c, t=task_id: c.get_task(t).state == "CANCELED", timeout=60, what="canceled")
    assert not any(job(queued, t) for t in [*flood, mine, greedy]), "nothing left"
