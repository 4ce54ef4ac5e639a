"""Poiesis's settings for task Pods on the real node (scripts/real-node): the image built there, the
node's own network (the recorder reaches the apiserver and PostgreSQL on the namespace's loopback),
and only the node labelled `type=real` (kwok's fake nodes run nothing)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

IMAGE = "poiesis.test/poiesis:dev"


def write_config(
    path: Path, kubeconfig: str, namespace: str, api_server: str, tail: str = "", **kubernetes: Any
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
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
        + '[kubernetes.node_selector]\ntype = "real"\n'
        + tail
    )
    return path


def database_secret(core: Any, namespace: str, url: str) -> None:
    """The Secret the recorders read the database URL from (`database_secret`, key `url`)."""
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "poiesis-database"}, "stringData": {"url": url}}
    )
