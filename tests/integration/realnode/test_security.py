"""A hostile executor on the real node, against task Pods as Poiesis makes them: in each security
mode, what the executor's process may do (capabilities, NoNewPrivs, seccomp, device nodes, raw
sockets, a setuid binary), what it can reach of trec's credentials (the kubelet's API, which
authenticates like a real cluster's, the token, other processes' environments), the `restricted`
Pod Security level enforced on a namespace, and images that cannot exist failing at once.

Task Pods here use the Pod network, as on a real cluster: trec reaches the apiserver through the
`kubernetes` Service and PostgreSQL on the node's address with a password.
"""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tes
from kubernetes import client

from poiesis.adapters.kubernetes.render import PodSettings
from poiesis.adapters.kubernetes.security import DEFAULT_CAPABILITIES, executor_context
from tests.integration.realnode.test_taskpods import tctl
from tests.support.realnode import database_for_pods, database_secret, node_ip, outside_packets, write_config
from tests.support.server import running_server
from tests.support.tasks import wait_ended

pytestmark = [pytest.mark.postgres, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
LABEL = "poiesis.io/task"
PYTHON = "poiesis.test/debian-python:bookworm"
POIESIS = "poiesis.test/poiesis:dev"  # its user is 10001: a non-root image
BUSYBOX = "poiesis.test/busybox:1"
CAPS = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "KILL": 5, "SETGID": 6, "SETUID": 7}

# What the executor tries, printed as one JSON line.
PROBE = r"""
import errno, json, os, socket, ssl, stat, subprocess, sys, urllib.error, urllib.request
def attempt(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
status = {}
for line in open("/proc/self/status"):
    key, _, value = line.partition(":")
    status[key] = value.strip()
out = {k: status[k] for k in ("CapEff", "CapBnd", "NoNewPrivs", "Seccomp", "Uid")}
out["mknod"] = attempt(lambda: os.mknod("/tmp/disk", 0o600 | stat.S_IFBLK, os.makedev(8, 0)))
raw = socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP
out["raw_socket"] = attempt(lambda: socket.socket(*raw).close())
out["token"] = os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token")
seen = []
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            environ = open(f"/proc/{pid}/environ", "rb").read()
        except OSError:
            continue
        seen.append(pid)
        if b"POIESIS_DATABASE_URL" in environ or os.environ["DB_PASSWORD_REVERSED"][::-1].encode() in environ:
            out.setdefault("credentials_in", []).append(pid)
out["processes"] = len(seen)
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
for path in ("/pods", "/configz", "/runningpods/"):
    try:
        urllib.request.urlopen(f"https://{os.environ['NODE_IP']}:10350{path}", context=context, timeout=5)
        out[path] = 200
    except urllib.error.HTTPError as e:
        out[path] = e.code
    except OSError as e:
        out[path] = str(e)
if os.getuid() == 0:
    # A setuid-root copy of python, run as another user: NoNewPrivs keeps that user.
    subprocess.run(["cp", sys.executable, "/tmp/pysuid"], check=True)
    os.chmod("/tmp/pysuid", 0o4755)
    def drop():
        os.setgid(1000)
        os.setuid(1000)
    run = subprocess.run(["/tmp/pysuid", "-c", "import os; print(os.geteuid())"], preexec_fn=drop,
                         capture_output=True, text=True)
    out["setuid_euid"] = run.stdout.strip() or run.stderr.strip()
if os.path.isdir("/data/in"):
    out["write_staged"] = attempt(lambda: open("/data/in/written-by-executor", "w").close())
print(json.dumps(out))
"""

# One operation per capability of the default set, as root; exit 1 (and the errno) if refused.
OPERATIONS = {
    "CHOWN": "open('/tmp/f', 'w').close(); os.chown('/tmp/f', 1000, 1000)",
    "DAC_OVERRIDE": (
        "os.mkdir('/tmp/d', 0o755); os.chown('/tmp/d', 1000, 1000); open('/tmp/d/x', 'w').close()"
    ),
    "FOWNER": "open('/tmp/f', 'w').close(); os.chown('/tmp/f', 1000, 1000); os.chmod('/tmp/f', 0o600)",
    "KILL": (
        "import subprocess, signal; p = subprocess.Popen(['sleep', '30'], user=1000, group=1000);"
        " os.kill(p.pid, signal.SIGTERM)"
    ),
    "SETGID": "os.setgid(1000)",
    "SETUID": "os.setuid(1000)",
}


@dataclass
class Mode:
    client: tes.HTTPClient
    core: Any
    namespace: str
    password: str
    node_ip: str

    def run(self, task: tes.Task, timeout: float = 180) -> tes.Task:
        task_id = self.client.create_task(task)
        return wait_ended(self.client, task_id, timeout, every=0.5)

    def probe(self, image: str, **task: Any) -> tuple[tes.Task, dict[str, Any]]:
        # Reversed, so that the probe's own environment does not hold what it looks for.
        env = {"NODE_IP": self.node_ip, "DB_PASSWORD_REVERSED": self.password[::-1]}
        done = self.run(
            tes.Task(executors=[tes.Executor(image=image, command=["python3", "-c", PROBE], env=env)], **task)
        )
        assert done.state == "COMPLETE", done
        return done, json.loads(done.logs[0].logs[0].stdout.strip().splitlines()[-1])


@contextmanager
def mode(api: client.ApiClient, kubeconfig: str, work: Path, level: str, **kubernetes: Any) -> Iterator[Mode]:
    core: Any = client.CoreV1Api(api)
    name = f"sec-{uuid.uuid4().hex[:8]}"
    labels = {f"pod-security.kubernetes.io/{m}": level for m in ("enforce", "warn")}
    core.create_namespace({"metadata": {"name": name, "labels": labels}})
    address = node_ip(core)
    try:
        with database_for_pods(address) as url:
            database_secret(core, name, url)
            config = write_config(
                work / f"{name}.toml",
                kubeconfig,
                name,
                None,  # trec finds the apiserver through the `kubernetes` Service
                "[tctl]\nstart_timeout_seconds = 600\nended_grace_seconds = 5\nresync_seconds = 5\n",
                host_network=False,
                ttl_seconds_after_finished=60,
                **kubernetes,
            )
            env = {"POIESIS_CONFIG": str(config), "POIESIS_LOG_FORMAT": "text"}
            password = url.split(":")[2].split("@")[0]
            with running_server("api", url, work, env) as api_process, tctl(work, env, url):
                yield Mode(tes.HTTPClient(api_process.url, timeout=20), core, name, password, address)
    finally:
        core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="module")
def default(
    real_api: client.ApiClient, real_kubeconfig: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mode]:
    with mode(real_api, real_kubeconfig, tmp_path_factory.mktemp("default"), "baseline") as m:
        yield m


@pytest.fixture(scope="module")
def restricted(
    real_api: client.ApiClient, real_kubeconfig: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mode]:
    with mode(
        real_api,
        real_kubeconfig,
        tmp_path_factory.mktemp("restricted"),
        "restricted",
        executor_security="restricted",
    ) as m:
        yield m


def mask(*names: str) -> int:
    return sum(1 << CAPS[n] for n in names)


def test_a_default_executor_keeps_six_capabilities_no_new_privileges_and_seccomp(default: Mode) -> None:
    _task, seen = default.probe(
        PYTHON, inputs=[tes.Input(path="/data/in/staged.txt", content="staged", type="FILE")]
    )
    assert int(seen["CapEff"], 16) == mask(*DEFAULT_CAPABILITIES), seen
    assert int(seen["CapBnd"], 16) == mask(*DEFAULT_CAPABILITIES), seen
    assert seen["NoNewPrivs"] == "1"
    assert seen["Seccomp"] == "2", "the runtime's default profile filters system calls"
    assert seen["mknod"] == "EPERM", "no device node of the host's disk"
    assert seen["raw_socket"] == "EPERM"
    assert seen["setuid_euid"] == "1000", "a setuid-root binary raised no privileges"
    assert seen["write_staged"] == "ok", "the executor writes what the filer staged"


def test_an_executor_cannot_reach_trecs_credentials(default: Mode) -> None:
    _, seen = default.probe(PYTHON)
    assert seen["token"] is False
    assert "credentials_in" not in seen, seen
    assert seen["processes"] >= 1
    # The kubelet on the node's address authenticates every caller: an executor has nothing to show.
    assert {seen[p] for p in ("/pods", "/configz", "/runningpods/")} == {401}, seen


def test_each_default_capability_is_what_an_ordinary_operation_needs(default: Mode) -> None:
    """Measured, not assumed: a container with the whole default set does every operation; one
    without each capability fails exactly the operation that needs it."""
    settings = PodSettings()
    cases = {"all": list(DEFAULT_CAPABILITIES)} | {
        cap: [c for c in DEFAULT_CAPABILITIES if c != cap] for cap in DEFAULT_CAPABILITIES
    }
    containers = []
    for name, caps in cases.items():
        ops = OPERATIONS if name == "all" else {name: OPERATIONS[name]}
        script = "import os, sys\n" + "\n".join(
            f"try:\n    {op}\nexcept OSError as e:\n    print({cap!r}, e); sys.exit(1)"
            for cap, op in ops.items()
        )
        containers.append(
            {
                "name": name.lower().replace("_", "-"),
                "image": PYTHON,
                "imagePullPolicy": "Never",
                "command": ["python3", "-c", script],
                "securityContext": executor_context(
                    restricted=False, capabilities=caps, user=settings.executor_user, group=None
                ),
            }
        )
    pod = f"caps-{uuid.uuid4().hex[:6]}"
    default.core.create_namespaced_pod(
        default.namespace,
        {
            "metadata": {"name": pod},
            "spec": {"restartPolicy": "Never", "nodeSelector": {"type": "real"}, "containers": containers},
        },
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = default.core.read_namespaced_pod(pod, default.namespace).status
        if status.phase in ("Succeeded", "Failed"):
            break
        time.sleep(0.5)
    codes = {s.name: s.state.terminated.exit_code for s in status.container_statuses}
    expected = {"all": 0} | {cap.lower().replace("_", "-"): 1 for cap in DEFAULT_CAPABILITIES}
    assert codes == expected, {
        s.name: default.core.read_namespaced_pod_log(pod, default.namespace, container=s.name)
        for s in status.container_statuses
    }


def test_a_restricted_namespace_admits_restricted_task_pods_and_they_complete(restricted: Mode) -> None:
    _task, seen = restricted.probe(
        POIESIS, inputs=[tes.Input(path="/data/in/staged.txt", content="staged", type="FILE")]
    )
    assert int(seen["CapEff"], 16) == 0
    assert int(seen["CapBnd"], 16) == 0
    assert seen["NoNewPrivs"] == "1"
    assert seen["Seccomp"] == "2"
    assert seen["Uid"].split()[0] == "10001"
    assert seen["mknod"] == "EPERM"
    assert seen["raw_socket"] == "EPERM"
    assert seen["write_staged"] == "ok"


def test_a_root_image_under_restricted_ends_at_once_saying_why(restricted: Mode) -> None:
    task = restricted.run(tes.Task(executors=[tes.Executor(image=BUSYBOX, command=["id"])]))
    assert task.state == "SYSTEM_ERROR", task
    line = " ".join(task.logs[0].system_logs)
    assert "runAsNonRoot" in line, line
    assert "restricted runs no image as root" in line
    assert "(for 600 s)" not in line, "the start timeout was not waited"


class Registry(http.server.BaseHTTPRequestHandler):
    """A registry's answers: `status` for every manifest (404 MANIFEST_UNKNOWN, or 503)."""

    status = 404
    hits: list[str]

    def _answer(self) -> None:
        self.hits.append(self.path)
        if self.path.rstrip("/") == "/v2":
            code, body = 200, b"{}"
        elif self.status == 404:
            code, body = 404, b'{"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}'
        else:
            code, body = self.status, b'{"errors": [{"code": "UNAVAILABLE", "message": "try later"}]}'
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = _answer

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def registry(name: str, status: int) -> Iterator[list[str]]:
    """A registry on the namespace's loopback, and the node's containerd told where `name` is."""
    hits: list[str] = []
    handler = type("Handler", (Registry,), {"status": status, "hits": hits})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hosts = Path(os.environ["POIESIS_REAL_NODE_REGISTRIES"]) / name
    hosts.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    (hosts / "hosts.toml").write_text(
        f'server = "{url}"\n[host."{url}"]\n  capabilities = ["pull", "resolve"]\n'
    )
    try:
        yield hits
    finally:
        server.shutdown()
        server.server_close()
        (hosts / "hosts.toml").unlink()
        hosts.rmdir()


def pull_message(m: Mode, task_id: str, timeout: float = 90) -> str:
    """The kubelet's words on the executor's pull, once it has tried."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pod in m.core.list_namespaced_pod(m.namespace, label_selector=f"{LABEL}={task_id}").items:
            for s in pod.status.init_container_statuses or []:
                waiting = s.state.waiting
                if (
                    (
                        s.name == "executor-0"
                        and waiting
                        and waiting.reason in ("ErrImagePull", "ImagePullBackOff")
                    )
                    and waiting.message
                    and "Back-off" not in waiting.message[:9]
                ):
                    return str(waiting.message)
        time.sleep(0.5)
    raise AssertionError(f"task {task_id}: no pull error seen")


def test_an_image_the_registry_does_not_have_fails_at_once_and_a_busy_registry_waits(default: Mode) -> None:
    with registry("registry-404.test", 404) as missing_hits, registry("registry-503.test", 503) as busy_hits:
        busy = default.client.create_task(
            tes.Task(executors=[tes.Executor(image="registry-503.test/lab/tool:1", command=["true"])])
        )
        missing = default.run(
            tes.Task(executors=[tes.Executor(image="registry-404.test/lab/nope:1", command=["true"])])
        )
        assert missing.state == "SYSTEM_ERROR", missing
        assert missing.logs[0].metadata["termination_reason"] in {"ErrImagePull", "ImagePullBackOff"}
        line = " ".join(missing.logs[0].system_logs)
        assert "not found" in line, line
        assert "(for 600 s)" not in line
        assert any("/manifests/" in h for h in missing_hits)
        # A 503 may pass: the task waits for the start timeout (600 s here), still going after the
        # missing one has ended.
        assert "503" in pull_message(default, busy)
        assert any("/manifests/" in h for h in busy_hits)
        assert default.client.get_task(busy).state in {"QUEUED", "INITIALIZING"}
        default.client.cancel_task(busy)
        assert wait_ended(default.client, busy, 60, every=0.5).state == "CANCELED"


def test_a_pull_from_an_unknown_registry_goes_to_the_namespace_not_outside(default: Mode) -> None:
    before = outside_packets()
    task_id = default.client.create_task(
        tes.Task(executors=[tes.Executor(image="registry.example.org/lab/tool:1", command=["true"])])
    )
    message = pull_message(default, task_id)
    # Every registry is mapped to a closed port on the node's loopback; nothing was resolved.
    assert "127.0.0.1:9" in message, message
    assert "lookup" not in message
    default.client.cancel_task(task_id)
    assert outside_packets() == before
