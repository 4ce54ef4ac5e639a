"""The Task Controller with thousands of tasks in flight on the test cluster.

    uv run python benchmarks/tctl.py [--tasks 5000] [--failures 200]

Starts the test cluster, a private PostgreSQL, `poiesis api` with the Kubernetes backend and one
`poiesis tctl` (the leader). Submits `--tasks` tasks whose executor keeps running (no recorder
runs: every end is the controller's to write) on fake nodes with room for them all (500 Pods to a
node; the task volume on the node's disk, as the test cluster binds claims at about one a second),
waits until their Pods run (or until none has started for `--stall-seconds`), then fails
`--failures` of them one every 50 ms as a kubelet would (status phase Failed, a reason and a
message) and polls each task through GET every 20 ms. Prints:
- Pod failed (the status write) -> the terminal state visible through GET, p50/p99; the
  controller's `ended_grace_seconds` (the time it leaves a live recorder to write the end) is set
  to 0 here and adds to this in a deployment;
- every task's state through ListTasks afterwards, and how many of those submitted it lacks;
- tctl's peak RSS (VmHWM) and CPU: while the Pods were created, while idle with all of them in
  flight (one resync included), and during the failures;
- while idle: tctl's reconcile passes (from its /metrics) and the Pod watch events the cluster sent
  (a watch of the benchmark's own), which is what tctl's idle work should follow.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402
from kubernetes import client, config  # noqa: E402
from kubernetes.watch.watch import iter_resp_lines  # noqa: E402

from benchmarks.k8s import pct, template  # noqa: E402
from tests.conftest import fresh_postgres_url_sync  # noqa: E402
from tests.support import cluster, postgres  # noqa: E402
from tests.support.measure import vm_hwm  # noqa: E402
from tests.support.server import running_server  # noqa: E402

LABEL = "poiesis.io/task"
TERMINAL = ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "PREEMPTED", "CANCELED")


def running_pods(core: Any, namespace: str) -> dict[str, str]:
    """task id -> Pod name, for the Pods whose executor runs (raw JSON pages: cheap)."""
    found: dict[str, str] = {}
    token = None
    while True:
        kwargs: dict[str, Any] = {"label_selector": LABEL, "limit": 1000, "_preload_content": False}
        if token:
            kwargs["_continue"] = token  # a continued list may not name a resourceVersion
        else:
            kwargs["resource_version"] = "0"  # from the apiserver's cache
        page = json.loads(core.list_namespaced_pod(namespace, **kwargs).data)
        for pod in page["items"]:
            statuses = pod.get("status", {}).get("initContainerStatuses") or []
            if any(c["name"] == "executor-0" and "running" in c.get("state", {}) for c in statuses):
                found[pod["metadata"]["labels"][LABEL]] = pod["metadata"]["name"]
        token = page["metadata"].get("continue")
        if not token:
            return found


def states_of_all(http: httpx.Client, base: str) -> dict[str, str]:
    """Every task's state, through ListTasks (MINIMAL pages of 2,000)."""
    found: dict[str, str] = {}
    token = ""
    while True:
        params = {"page_size": 2000} | ({"page_token": token} if token else {})
        page = http.get(f"{base}/tasks", params=params).json()
        found.update((task["id"], task["state"]) for task in page.get("tasks", []))
        token = page.get("next_page_token") or ""
        if not token:
            return found


def passes(http: httpx.Client, port: int) -> float:
    """The reconcile passes tctl has made, from its /metrics."""
    text = http.get(f"http://127.0.0.1:{port}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("poiesis_tctl_reconcile_duration_seconds_count")
    )


class PodEvents:
    """Counts the task Pod watch events the apiserver sends from now on, as tctl's informer gets them,
    for `seconds` (the apiserver ends the watch then; closing it from here would block on the TLS
    socket its reader holds)."""

    def __init__(self, kubeconfig: str, namespace: str, seconds: int) -> None:
        self.count = 0
        self._api = config.new_client_from_config(config_file=kubeconfig)
        core: Any = client.CoreV1Api(self._api)
        version = core.list_namespaced_pod(namespace, label_selector=LABEL, limit=1).metadata.resource_version
        self._response = core.list_namespaced_pod(
            namespace,
            label_selector=LABEL,
            watch=True,
            resource_version=version,
            timeout_seconds=seconds,
            _preload_content=False,
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for line in iter_resp_lines(self._response):
            if json.loads(line).get("type") in ("ADDED", "MODIFIED", "DELETED"):
                self.count += 1

    def counted(self) -> int:
        """The events counted, once the watch has ended."""
        self._thread.join(30)
        return self.count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--failures", type=int, default=200)
    parser.add_argument("--profile", type=Path, help="record tctl while idle with py-spy (raw) here")
    parser.add_argument(
        "--stall-seconds", type=int, default=600, help="give up waiting when no Pod starts for this long"
    )
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="poiesis-bench-tctl-") as tmp,
        cluster.test_cluster() as kubeconfig,
        postgres.private_postgres() as pg,
    ):
        work = Path(tmp)
        database = fresh_postgres_url_sync(pg, template(pg))
        api = config.new_client_from_config(config_file=kubeconfig)
        core: Any = client.CoreV1Api(api)
        namespace = "bench-tctl"
        core.create_namespace({"metadata": {"name": namespace}})
        # The test cluster's two nodes hold 110 Pods each: room for every task, 500 to a node.
        for n in range(-(-args.tasks // 500)):
            cluster.add_fake_node(
                core, f"bench-node-{n}", cpu="64", memory="256Gi", pods="600", ephemeral_storage="10Ti"
            )
        while not core.list_namespaced_service_account(namespace).items:
            time.sleep(0.1)
        toml = work / "poiesis.toml"
        toml.write_text(
            f'backend = "kubernetes"\nkubeconfig = "{kubeconfig}"\n'
            f'[kubernetes]\nnamespace = "{namespace}"\n'
            'task_volume = "empty-dir"\nimage = "poiesis:bench"\n'
            "[tctl]\nended_grace_seconds = 0\nresync_seconds = 60\nstart_timeout_seconds = 3600\n"
        )
        env = {"POIESIS_CONFIG": str(toml), "POIESIS_LOG_LEVEL": "WARNING", "POIESIS_DATABASE_URL": database}
        metrics_port = postgres.free_port()
        with running_server("api", database, work, env) as server, httpx.Client(timeout=60) as http:
            with (work / "tctl.log").open("wb") as log:
                tctl = subprocess.Popen(
                    [sys.executable, "-m", "poiesis.entrypoints.cli", "tctl"],
                    env=os.environ
                    | env
                    | {"POIESIS_POD_NAME": "bench-tctl", "POIESIS_PORT": str(metrics_port)},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            proc = psutil.Process(tctl.pid)
            try:
                body = {"executors": [{"image": "a", "command": ["a"], "env": {"KWOK_HANG": "true"}}]}
                started = time.monotonic()

                def post(_: int) -> str:
                    return str(http.post(f"{server.tes}/tasks", json=body).json()["id"])

                with ThreadPoolExecutor(8) as pool:
                    ids = list(pool.map(post, range(args.tasks)))
                submitted = time.monotonic() - started
                print(f"  {len(ids)} tasks submitted in {submitted:.0f} s", file=sys.stderr)
                pods: dict[str, str] = {}
                progressed = time.monotonic()
                while len(pods) < len(ids):
                    time.sleep(30)  # listing thousands of Pods is itself a load on the apiserver
                    found = running_pods(core, namespace)
                    if len(found) > len(pods):
                        progressed = time.monotonic()
                    pods = found
                    print(
                        f"  {len(pods)} of {len(ids)} executors running"
                        f" after {time.monotonic() - started:.0f} s",
                        file=sys.stderr,
                    )
                    if time.monotonic() - progressed > args.stall_seconds:
                        print(f"  no Pod started running for {args.stall_seconds} s: stuck", file=sys.stderr)
                        break
                in_flight = time.monotonic() - started
                cpu_create = sum(proc.cpu_times()[:2])
                spy = None
                if args.profile is not None:
                    record = ["record", "-p", str(tctl.pid), "-d", "60", "-r", "100", "-f", "raw"]
                    spy = subprocess.Popen(
                        ["uvx", "py-spy", *record, "-o", str(args.profile)],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                passes_before = passes(http, metrics_port)
                events = PodEvents(kubeconfig, namespace, 65)
                time.sleep(65)  # idle, all in flight, one resync
                pod_events = events.counted()
                if spy is not None:
                    spy.wait(30)
                cpu_idle = sum(proc.cpu_times()[:2]) - cpu_create
                idle_passes = passes(http, metrics_port) - passes_before
                victims = [task_id for task_id in ids if task_id in pods][: args.failures]
                failed_at: dict[str, float] = {}
                visible: dict[str, float] = {}
                states: dict[str, str] = {}
                done = threading.Event()

                def poll() -> None:
                    while not done.is_set():
                        for task_id in list(failed_at):
                            if task_id not in visible:
                                state = http.get(f"{server.tes}/tasks/{task_id}").json()["state"]
                                if state in TERMINAL:
                                    visible[task_id] = time.perf_counter()
                                    states[task_id] = state
                        time.sleep(0.02)

                poller = threading.Thread(target=poll, daemon=True)
                poller.start()
                for task_id in victims:
                    core.patch_namespaced_pod_status(
                        pods[task_id],
                        namespace,
                        {
                            "status": {
                                "phase": "Failed",
                                "reason": "Error",
                                "message": "the node's kubelet failed it",
                            }
                        },
                    )
                    failed_at[task_id] = time.perf_counter()
                    time.sleep(0.05)
                deadline = time.monotonic() + 300
                while len(visible) < len(victims) and time.monotonic() < deadline:
                    time.sleep(0.2)
                done.set()
                cpu_fail = sum(proc.cpu_times()[:2]) - cpu_create - cpu_idle
                rss = vm_hwm(tctl.pid)
                held = states_of_all(http, server.tes)
            finally:
                tctl.terminate()
                tctl.wait(30)
    latency = [(visible[t] - failed_at[t]) * 1000 for t in visible]
    wrong = sum(state != "SYSTEM_ERROR" for state in states.values())
    print(f"Task Controller on the test cluster: {args.tasks} tasks in flight, {args.failures} Pods failed")
    print(f"  submitted in {submitted:.0f} s; all Pods running after {in_flight:.0f} s")
    print(
        f"  Pod failed -> terminal state in GET:  p50 {pct(latency, 50):7.1f} ms"
        f"   p99 {pct(latency, 99):7.1f} ms"
        f"   ({len(visible)} of {len(victims)} seen, {wrong} not SYSTEM_ERROR)"
    )
    counts = ", ".join(f"{n} {state}" for state, n in sorted(Counter(held.values()).items()))
    lost = len(set(ids) - set(held))
    print(f"  the tasks' states through ListTasks afterwards: {counts}; {lost} of {len(ids)} missing")
    print(f"  tctl peak RSS:                        {rss / 2**20:7.1f} MiB")
    print(
        f"  tctl CPU: {cpu_create:.1f} s while {args.tasks} Pods were created ({in_flight:.0f} s),"
        f" {cpu_idle:.1f} s idle for 65 s, {cpu_fail:.1f} s for the failures"
    )
    print(
        f"  idle for 65 s: {idle_passes:.0f} reconcile passes; the cluster sent {pod_events}"
        " Pod watch events meanwhile (each one decoded by tctl's informer)"
    )


if __name__ == "__main__":
    main()
