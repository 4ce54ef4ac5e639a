"""The Kubernetes backend on the real node: real containers, `trec` as a real native sidecar.

    uv run python benchmarks/realnode.py [--tasks 20]     # as root: starts and stops the node

The same measures as benchmarks/k8s.py (which runs on kwok), on the node of scripts/real-node: the
control plane, a kubelet with containerd, a private PostgreSQL and `poiesis api`, all inside the
node's network namespace; `trec` is the sidecar of the image built by `scripts/real-node images`.
Tasks of two busybox executors run one after another. It prints:
- POST sent -> the Job seen by a watch, and -> the first executor seen running, p50/p99;
- the last executor's end seen by a watch (the status change the recorder acts on) -> the task's
  terminal state visible through GET (polled every 20 ms), p50/p99; and POST -> terminal in GET;
- Kubernetes API write calls per task, as benchmarks/k8s.py counts them;
- `trec` inside its container: start-up (its process's start, read from /proc: runc's init, which
  becomes trec, so the container's own setup is in it -> the first line it logs on looking at the
  Pod, timestamped by containerd) and peak RSS (VmHWM, sampled from /proc
  every 20 ms while it lives), p50/max.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.k8s import pct, template, writes  # noqa: E402
from tests.support.measure import vm_hwm  # noqa: E402
from tests.support.realnode import database_secret, write_config  # noqa: E402

LABEL = "poiesis.io/task"
BUSYBOX = "poiesis.test/busybox:1"
TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}


class Recorders:
    """Every `poiesis trec` process on this machine, by its Pod: when it started and its peak RSS.

    The node's containers are this machine's processes (in their own PID namespaces), so /proc
    shows them; the Pod's name is in each recorder's environment."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.peak_rss: dict[str, int] = {}
        self._pids: dict[int, str] = {}
        self._seen: set[int] = set()
        self._stop = threading.Event()
        self._tick = os.sysconf("SC_CLK_TCK")

    def _start_time(self, pid: int) -> float:
        """A process's start as wall-clock time: /proc counts it in ticks since boot."""
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / self._tick)

    def _scan(self) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) in self._seen:
                continue
            pid = int(entry.name)
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                # A container's first process is runc's init until it execs the entrypoint: look
                # again later. Anything else is looked at once.
                if not argv[0] or b"runc" in argv[0] or argv[0] == b"/proc/self/exe":
                    continue
                self._seen.add(pid)
                if b"trec" not in argv[1:3]:
                    continue
                env = dict(
                    item.split(b"=", 1)
                    for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                    if b"=" in item
                )
                pod = env[b"POIESIS_POD_NAME"].decode()
                self.started[pod] = self._start_time(pid)
                self._pids[pid] = pod
            except (OSError, KeyError, IndexError, ValueError):
                continue

    def _run(self) -> None:
        while not self._stop.is_set():
            self._scan()
            for pid, pod in list(self._pids.items()):
                peak = vm_hwm(pid)
                if peak:
                    self.peak_rss[pod] = max(self.peak_rss.get(pod, 0), peak)
                else:
                    del self._pids[pid]
            time.sleep(0.02)

    def __enter__(self) -> Recorders:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def first_look(core: Any, namespace: str, pod: str) -> float | None:
    """When the recorder logged its first look at the Pod, as containerd timestamped the line."""
    log = core.read_namespaced_pod_log(pod, namespace, container="trec", timestamps=True)
    for line in log.splitlines():
        stamp, _, text = line.partition(" ")
        if "recording task" in text:
            # RFC 3339 with nanoseconds: keep microseconds for fromisoformat.
            whole, _, fraction = stamp.rstrip("Z").partition(".")
            return datetime.fromisoformat(f"{whole}.{fraction[:6]:0<6}+00:00").timestamp()
    return None


def measure(tasks: int, kubeconfig: str) -> None:
    import httpx
    import yaml
    from kubernetes import client, config, watch

    from tests.conftest import fresh_postgres_url_sync
    from tests.support import postgres
    from tests.support.server import running_server

    with open(kubeconfig) as f:
        api_server = yaml.safe_load(f)["clusters"][0]["cluster"]["server"]
    api = config.new_client_from_config(config_file=kubeconfig)
    core: Any = client.CoreV1Api(api)
    batch: Any = client.BatchV1Api(api)
    namespace = f"bench-{os.getpid()}"
    core.create_namespace({"metadata": {"name": namespace}})
    while not core.list_namespaced_service_account(namespace).items:
        time.sleep(0.1)
    job_seen: dict[str, float] = {}
    first_running: dict[str, float] = {}
    last_end: dict[str, float] = {}
    pods: dict[str, str] = {}
    stop = threading.Event()
    body = {
        "executors": [
            {"image": BUSYBOX, "command": ["true"]},
            {"image": BUSYBOX, "command": ["sh", "-c", "echo done"]},
        ]
    }

    def watch_jobs() -> None:
        for event in watch.Watch().stream(batch.list_namespaced_job, namespace, timeout_seconds=1800):
            if event["type"] == "ADDED":
                job_seen.setdefault(event["object"].metadata.labels[LABEL], time.time())
            if stop.is_set():
                return

    def watch_pods() -> None:
        for event in watch.Watch().stream(core.list_namespaced_pod, namespace, timeout_seconds=1800):
            pod = event["object"]
            task = pod.metadata.labels[LABEL]
            pods[task] = pod.metadata.name
            steps = {s.name: s for s in pod.status.init_container_statuses or []}
            first = steps.get("executor-0")
            if first and (first.state.running or first.state.terminated):
                first_running.setdefault(task, time.time())
            last = steps.get(f"executor-{len(body['executors']) - 1}")
            if pod.status.phase in ("Succeeded", "Failed") or (last and last.state.terminated):
                last_end.setdefault(task, time.time())
            if stop.is_set():
                return

    def quietly(target: Any) -> Any:
        def run() -> None:
            try:
                target()
            except Exception:
                if not stop.is_set():
                    raise

        return run

    with (
        tempfile.TemporaryDirectory(prefix="poiesis-bench-rn-") as tmp,
        postgres.private_postgres() as pg,
        Recorders() as recorders,
    ):
        work = Path(tmp)
        database = fresh_postgres_url_sync(pg, template(pg))
        database_secret(core, namespace, database)
        toml = write_config(
            work / "poiesis.toml", kubeconfig, namespace, api_server, ttl_seconds_after_finished=300
        )
        for target in (watch_jobs, watch_pods):
            threading.Thread(target=quietly(target), daemon=True).start()
        env = {"POIESIS_CONFIG": str(toml), "POIESIS_LOG_LEVEL": "WARNING"}
        with running_server("api", database, work, env) as server, httpx.Client(timeout=30) as http:
            before = writes(api)
            posted: dict[str, float] = {}
            visible: dict[str, float] = {}
            states: dict[str, str] = {}
            for _ in range(tasks):
                sent = time.time()
                task_id = http.post(f"{server.tes}/tasks", json=body).json()["id"]
                posted[task_id] = sent
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    state = http.get(f"{server.tes}/tasks/{task_id}").json()["state"]
                    if state in TERMINAL:
                        visible[task_id] = time.time()
                        states[task_id] = state
                        break
                    time.sleep(0.02)
                else:
                    raise SystemExit(f"task {task_id} still {state} after 120 s")
            per_task = (writes(api) - before) / len(posted)
            time.sleep(1)
            startup = []
            for task_id in posted:
                pod = pods.get(task_id)
                looked = first_look(core, namespace, pod) if pod else None
                if pod in recorders.started and looked is not None:
                    startup.append(looked - recorders.started[pod])
            rss = [recorders.peak_rss[p] for t, p in pods.items() if p in recorders.peak_rss]
        stop.set()
    core.delete_namespace(namespace, propagation_policy="Background")
    api.close()

    def between(start: dict[str, float], end: dict[str, float]) -> list[float]:
        return [(end[t] - start[t]) * 1000 for t in posted if t in start and t in end]

    outcomes = {s: list(states.values()).count(s) for s in sorted(set(states.values()))}
    print(f"Kubernetes backend on the real node, {len(posted)} tasks of two executors, one after another")
    print(f"  outcomes: {outcomes}")
    for label, values in (
        ("POST sent -> Job seen by a watch", between(posted, job_seen)),
        ("POST sent -> first executor running", between(posted, first_running)),
        ("last executor ended -> state in GET", between(last_end, visible)),
        ("POST sent -> terminal state in GET", between(posted, visible)),
    ):
        if values:
            print(f"  {label + ':':38} p50 {pct(values, 50):7.1f} ms   p99 {pct(values, 99):7.1f} ms")
    print(f"  Kubernetes API writes per task:       {per_task:.2f}")
    if startup:
        print(
            f"  trec start-up (exec -> first look):   p50 {statistics.median(startup) * 1000:7.0f} ms"
            f"   max {max(startup) * 1000:7.0f} ms   ({len(startup)} recorders)"
        )
    if rss:
        print(
            f"  trec peak RSS in its container:       p50 {statistics.median(rss) / 2**20:7.1f} MiB"
            f"   max {max(rss) / 2**20:7.1f} MiB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=20)
    args = parser.parse_args()
    kubeconfig = os.environ.get("POIESIS_REAL_NODE_KUBECONFIG")
    if kubeconfig:  # inside the node's network namespace
        measure(args.tasks, kubeconfig)
        return
    script = str(ROOT / "scripts" / "real-node")
    up = subprocess.run([script, "up"], check=True, stdout=subprocess.PIPE, text=True).stdout
    try:
        exports = dict(item.split("=", 1) for item in up.strip().splitlines()[-1].split()[1:])
        subprocess.run(
            [
                script,
                "exec",
                "env",
                f"POIESIS_REAL_NODE_KUBECONFIG={exports['KUBECONFIG']}",
                sys.executable,
                __file__,
                "--tasks",
                str(args.tasks),
            ],
            check=True,
        )
    finally:
        subprocess.run([script, "down"], check=False)


if __name__ == "__main__":
    main()
