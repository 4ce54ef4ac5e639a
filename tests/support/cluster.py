"""The Kubernetes test cluster for pytest: the real control plane from scripts/test-cluster.

POIESIS_TEST_KUBECONFIG points the tests at an existing cluster instead (a kind cluster, say). The
plain KUBECONFIG is deliberately not used: a test run must never land on whatever cluster a
developer's shell happens to point at.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "test-cluster"
CLUSTER_NAME = "poiesis-test"


def binaries_dir() -> Path:
    env = os.environ.get("POIESIS_K8S_BIN")
    if env:
        return Path(env)
    return Path(
        subprocess.run([str(SCRIPT), "bin"], check=True, capture_output=True, text=True).stdout.strip()
    )


def unavailable_reason() -> str | None:
    """Why the tests cannot have a cluster here, or None when they can."""
    if os.environ.get("POIESIS_TEST_KUBECONFIG"):
        return None
    if (binaries_dir() / "kube-apiserver").exists() or shutil.which("go"):
        return None
    return (
        "no Kubernetes test cluster: install Go and run `scripts/test-cluster build` (about 25 minutes once, "
        "then cached), or set POIESIS_TEST_KUBECONFIG to an existing cluster's kubeconfig"
    )


@contextmanager
def test_cluster() -> Iterator[str]:
    """Yield a kubeconfig path; a cluster this starts is torn down afterwards, whatever happened."""
    existing = os.environ.get("POIESIS_TEST_KUBECONFIG")
    if existing:
        yield existing
        return
    env = os.environ | {"POIESIS_CLUSTER_NAME": CLUSTER_NAME}
    try:
        out = subprocess.run([str(SCRIPT), "up"], check=True, capture_output=True, text=True, env=env)
    except subprocess.CalledProcessError as exc:
        subprocess.run([str(SCRIPT), "down"], check=False, capture_output=True, env=env)
        raise RuntimeError(f"test cluster failed to start:\n{exc.stderr[-4000:]}") from exc
    kubeconfig = out.stdout.strip().splitlines()[-1].removeprefix("export KUBECONFIG=")
    try:
        yield kubeconfig
    finally:
        subprocess.run([str(SCRIPT), "down"], check=False, capture_output=True, env=env)


def add_fake_node(
    core: Any,
    name: str,
    *,
    labels: dict[str, str] | None = None,
    cpu: str = "8",
    memory: str = "32Gi",
    pods: str = "110",
    ephemeral_storage: str = "100Gi",
) -> None:
    """A node kwok plays the kubelet for (the annotation), addressed at 127.0.0.1: never kwok's
    default 192.0.2.x, which on these machines is the gateway."""
    core.create_node(
        {
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {"kubernetes.io/hostname": name, "type": "kwok"} | (labels or {}),
            }
        }
    )
    capacity = {"cpu": cpu, "memory": memory, "pods": pods, "ephemeral-storage": ephemeral_storage}
    core.patch_node_status(
        name,
        {
            "status": {
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "allocatable": capacity,
                "capacity": capacity,
            }
        },
    )
