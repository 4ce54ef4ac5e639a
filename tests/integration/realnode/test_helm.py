"""The Helm chart installed on the real node, as an operator would: `helm install` with the image
built here, the migrate hook, the API and both tctl replicas as real containers under the
`restricted` Pod Security level, basic authentication, a task through a port-forward run to
COMPLETE on the node and recorded by its own `trec`, the chart's NetworkPolicies enforced by the
node's kube-router (what an executor can and cannot connect to, beside a Pod they do not cover),
each ServiceAccount's rights asked of the real authorizer, the tctl leader's Pod deleted while tasks
run, `helm upgrade`, `helm test`, and `helm uninstall` leaving nothing of the release behind.

The tests run in order on one release (module scope); each prints its timings.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import re
import secrets
import subprocess
import sys
import threading
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

from tests.support.cluster import binaries_dir
from tests.support.helm import CHART, helm
from tests.support.realnode import database_for_pods, node_ip
from tests.support.server import add_users
from tests.support.tasks import wait_ended

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
ROOT = Path(__file__).resolve().parents[3]
RELEASE = "rel"
FULLNAME = "rel-poiesis"
BUSYBOX = "poiesis.test/busybox:1"
PYTHON = "poiesis.test/debian-python:bookworm"
REAL = {"type": "real"}
SMALL = {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"memory": "768Mi"}}
KINDS = [
    ("apps/v1", "deployments"),
    ("apps/v1", "replicasets"),
    ("apps/v1", "statefulsets"),
    ("v1", "pods"),
    ("v1", "services"),
    ("v1", "configmaps"),
    ("v1", "secrets"),
    ("v1", "serviceaccounts"),
    ("v1", "persistentvolumeclaims"),
    ("batch/v1", "jobs"),
    ("policy/v1", "poddisruptionbudgets"),
    ("rbac.authorization.k8s.io/v1", "roles"),
    ("rbac.authorization.k8s.io/v1", "rolebindings"),
    ("coordination.k8s.io/v1", "leases"),
    ("networking.k8s.io/v1", "ingresses"),
    ("networking.k8s.io/v1", "networkpolicies"),
]
# Addresses the tests put on the node namespace's loopback: a cloud's metadata server, and storage.
METADATA = "169.254.169.254"
STORAGE = "10.244.78.10"


@dataclass
class Release:
    api: client.ApiClient
    kubeconfig: str
    namespace: str
    tasks: str
    values: dict[str, Any]
    user: tuple[str, str]
    stand_ins: dict[str, int]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def core(self) -> Any:
        return client.CoreV1Api(self.api)

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(binaries_dir() / "kubectl"), "--kubeconfig", self.kubeconfig, *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=300,
        )

    def helm(self, *args: str, values: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
        return helm(*args, "--kubeconfig", self.kubeconfig, "-n", self.namespace, values=values)

    def pods(self, component: str) -> list[Any]:
        selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}"
        return [
            p
            for p in self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
            if p.metadata.deletion_timestamp is None
        ]

    def leader(self) -> str | None:
        lease = client.CoordinationV1Api(self.api).read_namespaced_lease(f"{FULLNAME}-tctl", self.tasks)
        return lease.spec.holder_identity

    @contextmanager
    def tes(self) -> Iterator[tes.HTTPClient]:
        """The API as a user reaches it: `kubectl port-forward` to the Service."""
        process = subprocess.Popen(
            [
                str(binaries_dir() / "kubectl"),
                "--kubeconfig",
                self.kubeconfig,
                "-n",
                self.namespace,
                "port-forward",
                f"svc/{FULLNAME}",
                ":80",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            match = re.search(r"127\.0\.0\.1:(\d+)", line)
            assert match, line
            yield tes.HTTPClient(
                f"http://127.0.0.1:{match.group(1)}", user=self.user[0], password=self.user[1], timeout=30
            )
        finally:
            process.terminate()
            process.wait(10)
            if process.stdout is not None:
                process.stdout.close()

    def wait(self, tes_client: tes.HTTPClient, task_id: str, timeout: float = 180) -> tes.Task:
        return wait_ended(tes_client, task_id, timeout, every=0.5)


class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"{self.server.server_address[0]}:{self.server.server_address[1]}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def stand_ins() -> Iterator[dict[str, int]]:
    """HTTP servers on addresses of the node's namespace: the metadata address on port 80, and two
    ports of a storage host (the release lets task Pods reach the first only)."""
    for address in (METADATA, STORAGE):
        subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", "lo"], check=True)
    servers = [
        http.server.ThreadingHTTPServer(bound, Answer)
        for bound in ((METADATA, 80), (STORAGE, 0), (STORAGE, 0))
    ]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield {"storage": servers[1].server_address[1], "storage_unlisted": servers[2].server_address[1]}
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        for address in (METADATA, STORAGE):
            subprocess.run(["ip", "addr", "del", f"{address}/32", "dev", "lo"], check=False)


def users_file(user: str, password: str, path: Path) -> str:
    return add_users(path, {user: password}).read_text()


def namespace(core: Any, name: str, level: str) -> None:
    labels = {f"pod-security.kubernetes.io/{mode}": level for mode in ("enforce", "warn")}
    core.create_namespace({"metadata": {"name": name, "labels": labels}})


@pytest.fixture(scope="module")
def release(
    real_api: client.ApiClient, real_kubeconfig: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    core: Any = client.CoreV1Api(real_api)
    suffix = uuid.uuid4().hex[:6]
    ns, tasks = f"tes-{suffix}", f"tes-tasks-{suffix}"
    namespace(core, ns, "restricted")
    namespace(core, tasks, "baseline")
    user = ("alice", secrets.token_urlsafe(12))
    token = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
    core.create_namespaced_secret(
        ns, {"metadata": {"name": "helm-test-credentials"}, "stringData": {"authorization": f"Basic {token}"}}
    )
    address = node_ip(core)
    with database_for_pods(address) as url, stand_ins() as ports:
        values = {
            "image": {"repository": "poiesis.test/poiesis", "tag": "dev", "pullPolicy": "Never"},
            "database": {"url": url},
            "tasks": {"namespace": tasks},
            # The apiserver's address is looked up at install; the database and storage are named.
            "networkPolicy": {
                "tasks": {
                    "database": {
                        "to": [{"ipBlock": {"cidr": f"{address}/32"}}],
                        "ports": [{"port": int(url.rsplit(":", 1)[1].split("/")[0]), "protocol": "TCP"}],
                    },
                    "storage": [
                        {
                            "to": [{"ipBlock": {"cidr": f"{STORAGE}/32"}}],
                            "ports": [{"port": ports["storage"], "protocol": "TCP"}],
                        }
                    ],
                }
            },
            "config": {
                "auth": ["basic"],
                "service_name": "Poiesis on the real node",
                "kubernetes": {
                    "task_volume": "empty-dir",
                    "node_selector": REAL,
                    "ttl_seconds_after_finished": 300,
                },
                "tctl": {
                    "start_timeout_seconds": 15,
                    "ended_grace_seconds": 5,
                    "resync_seconds": 5,
                    "lease_seconds": 8,
                    "renew_deadline_seconds": 5,
                },
            },
            "basicUsers": {"content": users_file(*user, tmp_path_factory.mktemp("users") / "users")},
            "api": {"nodeSelector": REAL, "resources": SMALL},
            "tctl": {"nodeSelector": REAL, "resources": SMALL},
            "migrate": {"nodeSelector": REAL},
            "tests": {"executorImage": BUSYBOX, "nodeSelector": REAL, "authSecret": "helm-test-credentials"},
        }
        r = Release(real_api, real_kubeconfig, ns, tasks, values, user, ports)
        try:
            yield r
        finally:
            if ns in r.helm("list", "-q").stdout.split():
                r.helm("uninstall", RELEASE, "--wait", "--timeout", "3m")
            core.delete_namespace(ns)
            core.delete_namespace(tasks)
            print("[helm] timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in r.timings.items()))


def test_install_runs_the_migration_then_the_api_and_both_tctl_replicas_as_real_containers(
    release: Release,
) -> None:
    started = time.monotonic()
    release.helm("install", RELEASE, str(CHART), "--wait", "--timeout", "5m", values=release.values)
    release.timings["install"] = time.monotonic() - started
    manifest = release.helm("get", "manifest", RELEASE).stdout
    count = len(re.findall(r"^kind: ", manifest, re.M))
    hooks = len(re.findall(r"^kind: ", release.helm("get", "hooks", RELEASE).stdout, re.M))
    print(
        f"[helm] install {release.timings['install']:.1f} s; the release holds {count} objects, {hooks} hooks"
    )
    assert release.helm("status", RELEASE).stdout.count("STATUS: deployed") == 1
    for component, replicas in (("api", 2), ("tctl", 2)):
        pods = release.pods(component)
        assert len(pods) == replicas, component
        for pod in pods:
            assert pod.spec.node_name == "rn-node-0", pod.metadata.name
            assert pod.status.phase == "Running", pod.metadata.name
            (status,) = pod.status.container_statuses
            assert status.ready, pod.metadata.name
            assert status.container_id.startswith("containerd://"), status.container_id
    # The migrate hook ran (and was removed on success): the schema is there, at its head.
    url = release.values["database"]["url"]
    revision = subprocess.run(
        ["psql", url, "-qAtc", "SELECT version_num FROM alembic_version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert revision, "no migration ran"
    assert not release.pods("migrate")
    # Someone holds the Lease: a tctl replica.
    deadline = time.monotonic() + 30
    while release.leader() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert release.leader() in {p.metadata.name for p in release.pods("tctl")}


def test_a_task_through_a_port_forward_completes_on_the_real_node_recorded_by_its_trec(
    release: Release,
) -> None:
    with release.tes() as tes_client:
        info = tes_client.get_service_info()
        assert info.name == "Poiesis on the real node"
        posted = time.monotonic()
        task_id = tes_client.create_task(
            tes.Task(
                executors=[
                    tes.Executor(image=BUSYBOX, command=["sh", "-c", "echo installed by helm; exit 0"])
                ]
            )
        )
        task = release.wait(tes_client, task_id)
        release.timings["task"] = time.monotonic() - posted
    assert task.state == "COMPLETE", task
    assert task.logs[0].logs[0].stdout.strip() == "installed by helm"
    assert task.logs[0].metadata["owner"].endswith("alice")
    (pod,) = release.core.list_namespaced_pod(
        release.tasks, label_selector=f"poiesis.io/task={task_id}"
    ).items
    assert pod.spec.node_name == "rn-node-0"
    assert not pod.spec.host_network
    trec = release.core.read_namespaced_pod_log(pod.metadata.name, release.tasks, container="trec")
    assert f"recording task {task_id}" in trec
    # The controller did not have to write it.
    for tctl in release.pods("tctl"):
        assert f"task {task_id}:" not in release.core.read_namespaced_pod_log(
            tctl.metadata.name, release.namespace
        )
    # The API's metrics, through the same port-forward a user has: counted from the database.
    with release.tes() as tes_client:
        metrics = httpx.get(f"{tes_client.url}/metrics", timeout=10).text
        # The dashboard and the command-line client, with the same user's credentials.
        auth = (tes_client.user, tes_client.password)
        page = httpx.get(f"{tes_client.url}/ui/tasks/{task_id}", auth=auth, timeout=10)
        shown = subprocess.run(
            [sys.executable, "-m", "poiesis.entrypoints.cli", "task", "-o", "json", "get", task_id],
            env={
                "PATH": os.environ["PATH"],
                "HOME": "/nonexistent",
                "POIESIS_URL": tes_client.url,
                "POIESIS_USER": auth[0],
                "POIESIS_PASSWORD": auth[1],
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert re.search(r'^poiesis_tasks\{state="COMPLETE"\} [1-9]', metrics, re.M), metrics[:2000]
    assert page.status_code == 200
    assert 'id="state">COMPLETE<' in page.text
    assert "installed by helm" in page.text
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["state"] == "COMPLETE"
    print(f"[helm] task POST -> COMPLETE through the port-forward {release.timings['task']:.1f} s")


# Connects to each target ("host:port"), printing one JSON line: "connected", or why not. The
# database is asked to start a session without a password, and answers what it requires.
CONNECT = r"""
import errno, json, os, socket, struct
out = {}
for name, target in json.loads(os.environ["TARGETS"]).items():
    host, port = target.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=4) as s:
            out[name] = "connected"
            if name == "database":
                s.settimeout(4)
                body = struct.pack("!i", 196608) + b"user\0postgres\0database\0postgres\0\0"
                s.sendall(struct.pack("!i", len(body) + 4) + body)
                kind, _, code = struct.unpack("!cii", s.recv(9))
                out[name] = f"authentication {code}" if kind == b"R" else kind.decode()
    except TimeoutError:
        out[name] = "timeout"
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno, str(e))
print(json.dumps(out))
"""


def restricted_pod(name: str, command: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """A Pod of the release's namespace (which enforces `restricted`) that no policy selects."""
    return {
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": REAL,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "main",
                    "image": "poiesis.test/poiesis:dev",
                    "imagePullPolicy": "Never",
                    "command": command,
                    "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
        },
    }


def wait_pod(release: Release, namespace: str, name: str, phases: set[str], timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pod = release.core.read_namespaced_pod(name, namespace)
        if pod.status.phase in phases and pod.status.pod_ip:
            return pod
        time.sleep(0.5)
    raise AssertionError(f"pod {namespace}/{name} never {phases}: {pod.status}")


def test_a_task_pod_reaches_only_what_the_chart_lets_it_and_a_pod_outside_the_policy_reaches_more(
    release: Release,
) -> None:
    """From an executor: the API (Service and Pods), tctl, another task's Pod, another Pod, the
    kubelet, the metadata address and an unlisted storage port are refused; the apiserver, the
    database (which asks for a password the executor lacks) and the listed storage port are
    reached, and trec records the task. A Pod no policy selects, probing the same targets from the
    release's namespace, reaches what the task Pod's egress policy alone kept from it."""
    core, ns = release.core, release.namespace
    listener = f"listener-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_pod(ns, restricted_pod(listener, ["python3", "-m", "http.server", "8080"]))
    apiserver = client.DiscoveryV1Api(release.api).read_namespaced_endpoint_slice("kubernetes", "default")
    database = release.values["networkPolicy"]["tasks"]["database"]
    address = database["to"][0]["ipBlock"]["cidr"].split("/")[0]
    with release.tes() as tes_client:
        other = tes_client.create_task(
            tes.Task(executors=[tes.Executor(image=PYTHON, command=["python3", "-m", "http.server", "8080"])])
        )
        deadline = time.monotonic() + 120
        while tes_client.get_task(other).state != "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.5)
        (other_pod,) = core.list_namespaced_pod(
            release.tasks, label_selector=f"poiesis.io/task={other}"
        ).items
        targets = {
            "api_service": f"{core.read_namespaced_service(FULLNAME, ns).spec.cluster_ip}:80",
            "api_pod": f"{release.pods('api')[0].status.pod_ip}:8000",
            "tctl_pod": f"{release.pods('tctl')[0].status.pod_ip}:8000",
            "other_task": f"{other_pod.status.pod_ip}:8080",
            "other_pod": f"{wait_pod(release, ns, listener, {'Running'}).status.pod_ip}:8080",
            "kubelet": f"{address}:10350",
            "metadata": f"{METADATA}:80",
            "storage_unlisted": f"{STORAGE}:{release.stand_ins['storage_unlisted']}",
            "storage": f"{STORAGE}:{release.stand_ins['storage']}",
            "apiserver": f"{apiserver.endpoints[0].addresses[0]}:{apiserver.ports[0].port}",
            "database": f"{address}:{database['ports'][0]['port']}",
        }
        env = {"TARGETS": json.dumps(targets)}
        probe = tes_client.create_task(
            tes.Task(executors=[tes.Executor(image=PYTHON, command=["python3", "-c", CONNECT], env=env)])
        )
        task = release.wait(tes_client, probe)
        outside = f"prober-{uuid.uuid4().hex[:6]}"
        core.create_namespaced_pod(ns, restricted_pod(outside, ["python3", "-c", CONNECT], env))
        wait_pod(release, ns, outside, {"Succeeded", "Failed"})
        tes_client.cancel_task(other)
        assert release.wait(tes_client, other).state == "CANCELED"
    core.delete_namespaced_pod(listener, ns, grace_period_seconds=0)
    unpoliced = json.loads(core.read_namespaced_pod_log(outside, ns).strip().splitlines()[-1])
    core.delete_namespaced_pod(outside, ns)
    assert task.state == "COMPLETE", task
    seen = json.loads(task.logs[0].logs[0].stdout.strip().splitlines()[-1])
    print(f"[helm] from an executor: {seen}\n[helm] from a Pod no policy selects: {unpoliced}")
    # The apiserver's rule is the install's lookup of the `kubernetes` EndpointSlice.
    policy = client.NetworkingV1Api(release.api).read_namespaced_network_policy(
        f"{FULLNAME}-tasks", release.tasks
    )
    assert [(p.ip_block.cidr, r.ports[0].port) for r in policy.spec.egress[1:2] for p in r.to] == [
        (f"{apiserver.endpoints[0].addresses[0]}/32", apiserver.ports[0].port)
    ]
    reached = {"storage", "apiserver", "database"}
    refused = set(targets) - reached
    assert {
        k for k, v in seen.items() if v != "connected" and not v.startswith("authentication")
    } == refused, seen
    assert {seen[k] for k in refused} == {"ECONNREFUSED"}, "refused at once by the policy, not timed out"
    # SASL (10) or MD5 (5): the database wants a password, which only trec holds.
    assert seen["database"] in {"authentication 10", "authentication 5"}, seen
    # Without the task Pods' egress policy the same probes get through, except to what an ingress
    # policy guards: tctl, and task Pods.
    assert {k for k, v in unpoliced.items() if v == "ECONNREFUSED"} == {"tctl_pod", "other_task"}, unpoliced
    assert unpoliced["api_service"] == unpoliced["metadata"] == unpoliced["kubelet"] == "connected"
    (pod,) = core.list_namespaced_pod(release.tasks, label_selector=f"poiesis.io/task={probe}").items
    trec = core.read_namespaced_pod_log(pod.metadata.name, release.tasks, container="trec")
    assert f"recording task {probe}" in trec


def test_an_unauthenticated_caller_is_refused(release: Release) -> None:
    with release.tes() as tes_client:
        anonymous = tes.HTTPClient(tes_client.url, timeout=10)
        with pytest.raises(Exception, match="401"):
            anonymous.list_tasks()


def can(
    release: Release,
    account: str,
    verb: str,
    resource: str,
    namespace: str,
    name: str = "",
    subresource: str = "",
) -> bool:
    group, _, plural = resource.rpartition("/")
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=f"system:serviceaccount:{release.namespace}:{FULLNAME}-{account}",
            groups=[
                "system:serviceaccounts",
                f"system:serviceaccounts:{release.namespace}",
                "system:authenticated",
            ],
            resource_attributes=client.V1ResourceAttributes(
                verb=verb,
                group=group,
                resource=plural,
                namespace=namespace,
                name=name or None,
                subresource=subresource or None,
            ),
        )
    )
    return bool(client.AuthorizationV1Api(release.api).create_subject_access_review(review).status.allowed)


def test_each_service_account_can_do_its_work_and_nothing_more(release: Release) -> None:
    t, own = release.tasks, release.namespace
    lease = f"{FULLNAME}-tctl"
    allowed = [
        ("api", "create", "batch/jobs", t, "", ""),
        ("api", "patch", "batch/jobs", t, "", ""),
        ("api", "watch", "pods", t, "", ""),
        ("api", "get", "pods", t, "", "log"),
        ("api", "create", "rbac.authorization.k8s.io/roles", t, "", ""),
        ("api", "create", "rbac.authorization.k8s.io/rolebindings", t, "", ""),
        ("tctl", "update", "coordination.k8s.io/leases", t, lease, ""),
        ("tctl", "delete", "pods", t, "", ""),
        ("tctl", "create", "batch/jobs", t, "", ""),
        ("tctl", "create", "events", t, "", ""),
    ]
    refused = [
        ("api", "get", "secrets", t, "", ""),
        ("api", "list", "secrets", own, "", ""),
        ("api", "create", "batch/jobs", own, "", ""),
        ("api", "create", "pods", t, "", ""),
        ("api", "update", "coordination.k8s.io/leases", t, lease, ""),
        ("api", "create", "pods", t, "", "exec"),
        ("tctl", "update", "coordination.k8s.io/leases", t, "another-lease", ""),
        ("tctl", "create", "coordination.k8s.io/leases", t, "", ""),
        ("tctl", "create", "rbac.authorization.k8s.io/roles", t, "", ""),
        ("tctl", "get", "secrets", t, "", ""),
        ("tctl", "delete", "pods", own, "", ""),
        ("tctl", "list", "nodes", "", "", ""),
    ]
    wrong = [a for a in allowed if not can(release, *a)] + [r for r in refused if can(release, *r)]
    assert not wrong, wrong


def test_the_other_tctl_replica_takes_over_when_the_leaders_pod_is_deleted(release: Release) -> None:
    leader = release.leader()
    assert leader
    with release.tes() as tes_client:
        running = [
            tes_client.create_task(tes.Task(executors=[tes.Executor(image=BUSYBOX, command=["sleep", "6"])]))
            for _ in range(3)
        ]
        deleted = time.monotonic()
        release.core.delete_namespaced_pod(leader, release.namespace)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            holder = release.leader()
            if holder and holder != leader:
                break
            time.sleep(0.2)
        release.timings["takeover"] = time.monotonic() - deleted
        assert holder, "nobody took the Lease"
        assert holder != leader, holder
        # Only a leader acts on an image the node does not have: the new one ends the task.
        missing = tes_client.create_task(
            tes.Task(executors=[tes.Executor(image="poiesis.test/not-here:1", command=["true"])])
        )
        ends = {task_id: release.wait(tes_client, task_id).state for task_id in running}
        assert set(ends.values()) == {"COMPLETE"}, ends
        lost = release.wait(tes_client, missing, timeout=120)
    assert lost.state == "SYSTEM_ERROR", lost
    assert any("ErrImage" in line or "image" in line.lower() for line in lost.logs[0].system_logs), lost.logs[
        0
    ]
    print(
        f"[helm] tctl leader deleted -> the other replica holds the Lease {release.timings['takeover']:.1f} s"
    )


def test_upgrade_with_changed_values_rolls_the_pods_and_keeps_every_task(release: Release) -> None:
    with release.tes() as tes_client:
        before = {t.id: t.state for t in tes_client.list_tasks(view="MINIMAL").tasks}
    old_pods = {p.metadata.name for p in release.pods("api") + release.pods("tctl")}
    values = {**release.values, "config": {**release.values["config"], "service_name": "Poiesis, upgraded"}}
    started = time.monotonic()
    release.helm("upgrade", RELEASE, str(CHART), "--wait", "--timeout", "5m", values=values)
    release.timings["upgrade"] = time.monotonic() - started
    release.values = values
    new_pods = {p.metadata.name for p in release.pods("api") + release.pods("tctl")}
    assert len(new_pods) == 4
    assert not new_pods & old_pods
    with release.tes() as tes_client:
        assert tes_client.get_service_info().name == "Poiesis, upgraded"
        after = {t.id: t.state for t in tes_client.list_tasks(view="MINIMAL").tasks}
    assert after == before
    assert "2" in release.helm("history", RELEASE).stdout.splitlines()[-1].split()[0]
    print(f"[helm] upgrade {release.timings['upgrade']:.1f} s; {len(after)} tasks kept")


def test_helm_test_passes(release: Release) -> None:
    started = time.monotonic()
    result = release.helm("test", RELEASE, "--timeout", "5m", "--logs")
    release.timings["helm test"] = time.monotonic() - started
    assert "Succeeded" in result.stdout, result.stdout
    assert re.search(r"task \S+ COMPLETE", result.stdout), result.stdout


def test_uninstall_leaves_no_object_of_the_release(release: Release) -> None:
    started = time.monotonic()
    release.helm("uninstall", RELEASE, "--wait", "--timeout", "3m")
    release.timings["uninstall"] = time.monotonic() - started

    def leftovers() -> list[str]:
        left = []
        for namespace in (release.namespace, release.tasks):
            for api_version, plural in KINDS:
                kind = f"{plural}.{api_version.split('/')[0]}" if "/" in api_version else plural
                selector = f"app.kubernetes.io/instance={RELEASE}"
                left += release.kubectl(
                    "get", kind, "-n", namespace, "-l", selector, "-o", "name"
                ).stdout.split()
            # The hooks remove themselves.
            for name in (f"{FULLNAME}-migrate", f"{FULLNAME}-test"):
                for plural in ("jobs", "secrets", "pods"):
                    if release.kubectl("get", plural, name, "-n", namespace, check=False).returncode == 0:
                        left.append(f"{namespace}/{plural}/{name}")
        return left

    # Pods the Deployments owned go through their grace period after the release is gone.
    deadline = time.monotonic() + 60
    while (left := leftovers()) and time.monotonic() < deadline:
        time.sleep(1)
    release.timings["uninstall, all gone"] = time.monotonic() - started
    assert not left, left
    # tctl writes the Lease the chart made: it must keep the marks helm removes it by.
    with pytest.raises(ApiException) as gone:
        client.CoordinationV1Api(release.api).read_namespaced_lease(f"{FULLNAME}-tctl", release.tasks)
    assert gone.value.status == 404
    print(f"[helm] uninstall {release.timings['uninstall']:.1f} s")
