"""Fixtures for the tests on the real node (scripts/real-node): a kubelet with containerd runs the
TaskPods for real. These tests run inside the node's network namespace, where the control plane,
PostgreSQL and the S3 server all listen on that namespace's own loopback; `scripts/test` starts the
node and runs them there. Elsewhere they skip."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import yaml
from kubernetes import client, config

KUBECONFIG = os.environ.get("POIESIS_REAL_NODE_KUBECONFIG")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/realnode/" in str(item.fspath):
            item.add_marker(pytest.mark.realnode)


@pytest.fixture(scope="session")
def real_kubeconfig() -> str:
    if not KUBECONFIG:
        pytest.skip("no real node: scripts/test runs these inside `scripts/real-node exec` (needs root)")
    return KUBECONFIG


@pytest.fixture(scope="session")
def real_api(real_kubeconfig: str) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=real_kubeconfig)
    yield api
    api.close()


@pytest.fixture(scope="session")
def api_server(real_kubeconfig: str) -> str:
    with open(real_kubeconfig) as f:
        return str(yaml.safe_load(f)["clusters"][0]["cluster"]["server"])
