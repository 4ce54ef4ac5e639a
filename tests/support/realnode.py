"""Poiesis's settings for task Pods on the real node (scripts/real-node): the image built there, the
node's own network (the recorder reaches the apiserver and PostgreSQL on the namespace's loopback),
and only the node labelled `type=real` (kwok's fake nodes run nothing)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest

from poiesis.adapters.kubernetes.taskpod import TASK_LABEL
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


def storage_secret(core: Any, namespace: str, s3: Any) -> str:
    """The Secret the filers read their storage endpoints from (`storage_secret`): `s3`'s; its name."""
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "poiesis-storage"}, "stringData": {"endpoints.toml": s3.endpoints()}}
    )
    return "poiesis-storage"


def tolerations(seconds: int) -> str:
    """`[kubernetes]` tolerations (TOML tables): task Pods stay `seconds` on a node that is not ready
    or unreachable before they are taken away (Kubernetes' default: 300)."""
    return "".join(
        f'[[kubernetes.tolerations]]\nkey = "node.kubernetes.io/{taint}"\noperator = "Exists"\n'
        f'effect = "NoExecute"\ntolerationSeconds = {seconds}\n'
        for taint in ("not-ready", "unreachable")
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


def image_archive(prefix: str) -> Path:
    """The archive `scripts/real-node images` built for an image (`busybox`, `python`, ...)."""
    cache = Path(os.environ.get("POIESIS_K8S_CACHE") or Path.home() / ".cache" / "poiesis-k8s")
    listed = (cache / "real-node-images" / "current.list").read_text().split()
    return Path(next(p for p in listed if Path(p).name.startswith(prefix + "-")))


@contextmanager
def private_registry(work: Path, users: dict[str, str]) -> Iterator[str]:
    """A registry (distribution's, as `scripts/real-node up` built it) on the namespace's loopback,
    asking every caller for a user and password from `users`, and the node's containerd told to
    reach it there by plain HTTP. Yields its address (host:port), the name in its images."""
    binary = os.environ.get("POIESIS_REGISTRY_BINARY")
    if not binary or not Path(binary).exists():
        pytest.skip("no registry binary: scripts/real-node up builds it (POIESIS_REGISTRY_BINARY)")
    port = free_port()
    address = f"127.0.0.1:{port}"
    htpasswd = work / "htpasswd"
    htpasswd.write_text(
        "".join(
            f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=5)).decode()}\n" for u, p in users.items()
        )
    )
    config = work / "registry.yml"
    config.write_text(
        "version: 0.1\nlog: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {work / 'data'}}}}}\n"
        f"http: {{addr: {address}}}\n"
        f"auth: {{htpasswd: {{realm: poiesis-test, path: {htpasswd}}}}}\n"
    )
    hosts = Path(os.environ["POIESIS_REAL_NODE_REGISTRIES"]) / address
    hosts.mkdir(parents=True, exist_ok=True)
    (hosts / "hosts.toml").write_text(
        f'server = "http://{address}"\n[host."http://{address}"]\n  capabilities = ["pull", "resolve"]\n'
    )
    with (work / "registry.log").open("wb") as log:
        process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            try:
                if httpx.get(f"http://{address}/v2/", timeout=1).status_code == 401:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError(f"the registry did not start: {(work / 'registry.log').read_text()[-2000:]}")
        yield address
    finally:
        process.terminate()
        process.wait(10)
        (hosts / "hosts.toml").unlink()
        hosts.rmdir()


def push(archive: Path, reference: str, user: str, password: str) -> None:
    """Push an image archive to a registry by plain HTTP, as `user`."""
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--dest-creds",
            f"{user}:{password}",
            f"docker-archive:{archive}",
            f"docker://{reference}",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


class Seen:
    """Every task Pod and Job the cluster showed, polled in the background (a read that fails while
    the apiserver is down is skipped): the UIDs each task had, so that a test can tell a task that
    ran once from one whose Pod or Job was made again."""

    def __init__(self, core: Any, namespace: str, interval: float = 0.5) -> None:
        from kubernetes import client

        self._core, self._batch = core, client.BatchV1Api(core.api_client)
        self._namespace, self._interval = namespace, interval
        self._uids: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self._interval):
            for kind, lister in (
                ("Pod", self._core.list_namespaced_pod),
                ("Job", self._batch.list_namespaced_job),
            ):
                try:
                    items = lister(self._namespace, label_selector=TASK_LABEL, _request_timeout=5).items
                except Exception:  # noqa: BLE001 - the apiserver away; the next poll sees it back
                    continue
                with self._lock:
                    for item in items:
                        self._uids[(kind, item.metadata.labels[TASK_LABEL])].add(item.metadata.uid)

    def uids(self, kind: str, task_id: str) -> set[str]:
        with self._lock:
            return set(self._uids.get((kind, task_id), set()))

    def once(self, task_ids: list[str]) -> None:
        """Each task had exactly one Job and one Pod."""
        for task_id in task_ids:
            for kind in ("Job", "Pod"):
                assert len(self.uids(kind, task_id)) == 1, (task_id, kind, self.uids(kind, task_id))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
