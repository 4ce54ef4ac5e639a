"""The API's grants on the test cluster: each task Pod's recorder is given read access to that Pod
once, by a watch that goes on from its last version across its own timeouts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from poiesis.adapters.kubernetes import cluster as cluster_module
from poiesis.adapters.kubernetes.cluster import KubernetesCluster, api_client
from poiesis.adapters.kubernetes.render import PodSettings
from poiesis.adapters.kubernetes.taskpod import TASK_LABEL, job_name
from tests.integration.k8s.conftest import wait_until


class Counting:
    """The RBAC and core clients, counting the Roles asked for and the lists of Pods (not watches)."""

    def __init__(self, rbac: Any, core: Any) -> None:
        self._rbac = rbac
        self._core = core
        self.roles: list[str] = []
        self.lists = 0

    def create_namespaced_role(self, namespace: str, body: dict[str, Any]) -> Any:
        self.roles.append(body["metadata"]["name"])
        return self._rbac.create_namespaced_role(namespace, body)

    def list_namespaced_pod(self, namespace: str, **kwargs: Any) -> Any:
        if not kwargs.get("watch"):
            self.lists += 1
        return self._core.list_namespaced_pod(namespace, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rbac, name)


HANG = [{"name": "KWOK_HANG", "value": "true"}]


def task_job(batch: Any, namespace: str, task_id: str) -> None:
    """A Job labelled for a task; the Job controller makes its Pod, as for a TaskPod."""
    labels = {TASK_LABEL: task_id}
    batch.create_namespaced_job(
        namespace,
        {
            "metadata": {"name": job_name(task_id), "labels": labels},
            "spec": {
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": "c",
                                "image": "registry.example/a:1",
                                "env": HANG,
                            }
                        ],
                    },
                }
            },
        },
    )


Grants = tuple[KubernetesCluster, Counting]


@pytest.fixture
def grants(kubeconfig: str, namespace: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Grants]:
    monkeypatch.setattr(cluster_module, "GRANT_WATCH_SECONDS", 1)  # a new watch every second
    kube = KubernetesCluster(api_client(kubeconfig), PodSettings(namespace=namespace))
    counting = Counting(kube._rbac, kube._core)
    kube._rbac = kube._core = counting
    yield kube, counting
    kube.stop()


def test_each_task_pod_is_granted_once_across_the_watchs_restarts(
    grants: Grants,
    batch: client.BatchV1Api,
    core: client.CoreV1Api,
    namespace: str,
) -> None:
    kube, counting = grants
    rbac = client.RbacAuthorizationV1Api(batch.api_client)

    def pods() -> int:
        return len(core.list_namespaced_pod(namespace, label_selector=TASK_LABEL).items)

    task_job(batch, namespace, "before")  # there when the watch starts: granted from the list
    wait_until(lambda: pods() == 1, timeout=30, what="the first Pod")
    kube.start()
    wait_until(lambda: counting.roles == [job_name("before")], timeout=30, what="the first grant")
    task_job(batch, namespace, "after")  # added while watching: granted from the watch
    wait_until(lambda: len(counting.roles) == 2, timeout=30, what="the second grant")

    # Four watches later (each one ends after a second and the next goes on from its version),
    # neither Pod has been granted again: a watch begun without a version would replay both.
    time.sleep(4.5)
    assert sorted(counting.roles) == sorted([job_name("before"), job_name("after")])
    assert counting.lists == 1, "each watch goes on from the last one's version, with no list between"
    names = {r.metadata.name for r in rbac.list_namespaced_role(namespace).items}
    assert {job_name("before"), job_name("after")} <= names
