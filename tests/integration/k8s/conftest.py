"""Fixtures for tests against the Kubernetes test cluster: one cluster per session, a namespace per test."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from kubernetes import client, config

from tests.support import cluster

T = TypeVar("T")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/k8s/" in str(item.fspath):
            item.add_marker(pytest.mark.k8s)


@pytest.fixture(scope="session")
def kubeconfig() -> Iterator[str]:
    reason = cluster.unavailable_reason()
    if reason:
        pytest.skip(reason)
    with cluster.test_cluster() as path:
        yield path


@pytest.fixture(scope="session")
def api_client(kubeconfig: str) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=kubeconfig)
    _wait_for_nodes(client.CoreV1Api(api))
    yield api
    api.close()


def _wait_for_nodes(core: client.CoreV1Api, timeout: float = 60) -> None:
    def ready() -> bool:
        nodes = core.list_node().items
        return bool(nodes) and all(
            any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or [])) for n in nodes
        )

    wait_until(ready, timeout=timeout, what="nodes Ready")


@pytest.fixture(scope="session")
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def batch(api_client: client.ApiClient) -> client.BatchV1Api:
    return client.BatchV1Api(api_client)


@pytest.fixture
def namespace(core: client.CoreV1Api) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    # Admission refuses Pods until the ServiceAccount controller has made the default account.
    wait_until(
        lambda: core.list_namespaced_service_account(name).items, timeout=30, what="default ServiceAccount"
    )
    yield name
    core.delete_namespace(name, propagation_policy="Background")


def wait_until(
    check: Callable[[], T], *, timeout: float = 30, interval: float = 0.1, what: str = "condition"
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
