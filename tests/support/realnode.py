"""Poiesis's settings for task Pods on the real node (scripts/real-node): the image built there, the
node's own network (the recorder reaches the apiserver and PostgreSQL on the namespace's loopback),
and only the node labelled `type=real` (kwok's fake nodes run nothing)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.postgres import free_port

IMAGE = "poiesis.test/poiesis:dev"


def write_config(
    path: Path, kubeconfig: str, namespace: str, api_server: str | None, tail: str = "", **kubernetes: Any
) -> Path:
    """A settings file for `poiesis api`/`tctl` with the Kubernetes backend on the real node;
    `kubernetes` adds or overrides `[kubernetes]` settings, `tail` appends tables."""
    settings = {
        "namespace": namespace,
        "image": IMAGE,
        "image_pull_policy": "Never",
        "task_volume": "empty-dir",
        "host_network": True,
        "api_server": api_server,
        **kubernetes,
    }
    path.write_text(
        f'backend = "kubernetes"\nkubeconfig = "{kubeconfig}"\n[kubernetes]\n'
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items() if v is not None)
        + '[kubernetes.node_selector]\ntype = "real"\n'
        + tail
    )
    return path


def database_secret(core: Any, namespace: str, url: str) -> None:
    """The Secret the recorders read the database URL from (`database_secret`, key `url`)."""
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "poiesis-database"}, "stringData": {"url": url}}
    )


def node_ip(core: Any) -> str:
    node = core.read_node("rn-node-0")
    return str(next(a.address for a in node.status.addresses if a.type == "InternalIP"))


@contextmanager
def database_for_pods(address: str) -> Iterator[str]:
    """A PostgreSQL Pods on the Pod network reach: on the node's address too, with a password."""
    directory = tempfile.mkdtemp(prefix="poiesis-pods-pg-")
    password = secrets.token_urlsafe(16)
    port = free_port()
    script = str(Path(__file__).resolve().parents[2] / "scripts" / "postgres")
    env = os.environ | {"POIESIS_PG_LISTEN": address, "POIESIS_PG_PASSWORD": password}
    subprocess.run([script, "up", directory, str(port)], check=True, capture_output=True, env=env)
    try:
        yield f"postgresql://postgres:{password}@{address}:{port}/postgres"
    finally:
        subprocess.run([script, "down", directory], check=False, capture_output=True)


def outside_packets() -> int:
    """Packets aimed outside the node's namespace so far (scripts/real-node counts them)."""
    total = 0
    for table in ("filter", "mangle"):
        listing = subprocess.run(
            ["iptables", "-t", table, "-L", "POIESIS-OUTSIDE", "-v", "-x", "-n"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        total += sum(int(line.split()[0]) for line in listing.splitlines()[2:] if line.strip())
    return total
