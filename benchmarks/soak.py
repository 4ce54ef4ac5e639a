"""A soak on the real node: mixed tasks for a while, with a fault injected every few minutes.

    uv run python benchmarks/soak.py [--minutes 30] [--every 4] [--rate 0.5]   # as root

Inside the node of scripts/real-node (started and stopped here), with a private PostgreSQL,
`poiesis api` and `poiesis tctl`: tasks of six kinds are created at `--rate` per second, in turn:

    ok         one busybox executor that prints a line           -> COMPLETE
    fails      exits 3                                            -> EXECUTOR_ERROR, exit code 3
    cancel     sleeps 60 s, cancelled 3 s after its create        -> CANCELED
    oom        allocates 400 MB under a 100 MB limit              -> EXECUTOR_ERROR, 137, OOMKilled
    missing    an image no registry has                           -> SYSTEM_ERROR
    big-logs   prints 2 MB                                        -> COMPLETE, a 64 KiB tail

and every `--every` minutes one fault, in turn: the kubelet stopped for 10 s, containerd for 8 s,
PostgreSQL for 30 s, the Pod of a long task (made for it) evicted, the control plane (apiserver,
etcd, controllers) stopped for 20 s. Afterwards every task must be terminal and as its kind says
(an evicted one PREEMPTED); the script prints the counts, every task that is not, the API's and
tctl's RSS (sampled every 10 s: first, peak, last) and exits 1 if any task is wrong.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.realnode import database_secret, tolerations, write_config  # noqa: E402

LABEL = "poiesis.io/task"
BUSYBOX = "poiesis.test/busybox:1"
NOSHELL = "poiesis.test/noshell:1"
TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"}
REAL_NODE = str(ROOT / "scripts" / "real-node")
PG = str(ROOT / "scripts" / "postgres")

KINDS: dict[str, dict[str, Any]] = {
    "ok": {"executors": [{"image": BUSYBOX, "command": ["echo", "fine"]}]},
    "fails": {"executors": [{"image": BUSYBOX, "command": ["sh", "-c", "exit 3"]}]},
    "cancel": {"executors": [{"image": BUSYBOX, "command": ["sleep", "60"]}]},
    "oom": {
        "executors": [{"image": NOSHELL, "command": ["/ptool", "alloc", "400"]}],
        "resources": {"ram_gb": 0.1},
    },
    "missing": {"executors": [{"image": "poiesis.test/not-here:1", "command": ["/x"]}]},
    "big-logs": {
        "executors": [{"image": BUSYBOX, "command": ["sh", "-c", "yes 0123456789abcdef | head -c 2000000"]}]
    },
}
EXPECTED = {
    "ok": "COMPLETE",
    "fails": "EXECUTOR_ERROR",
    "cancel": "CANCELED",
    "oom": "EXECUTOR_ERROR",
    "missing": "SYSTEM_ERROR",
    "big-logs": "COMPLETE",
}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def right(kind: str, task: dict[str, Any]) -> bool:
    state = task["state"]
    if state != EXPECTED[kind]:
        return False
    logs = (task.get("logs") or [{}])[0].get("logs") or []
    if kind == "fails":
        return [e.get("exit_code") for e in logs] == [3]
    if kind == "oom":
        return [e.get("exit_code") for e in logs] == [137]
    if kind == "ok":
        return [e.get("stdout") for e in logs] == ["fine\n"]
    if kind == "big-logs":
        return len(logs) == 1 and 60_000 <= len(logs[0].get("stdout") or "") <= 64 * 1024
    return True


def soak(minutes: float, every: float, rate: float, kubeconfig: str) -> int:
    import httpx
    import yaml
    from kubernetes import client, config

    from tests.support import postgres
    from tests.support.server import running_server, stop

    with open(kubeconfig) as f:
        api_server = yaml.safe_load(f)["clusters"][0]["cluster"]["server"]
    core: Any = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
    namespace = f"soak-{os.getpid()}"
    core.create_namespace({"metadata": {"name": namespace}})
    while not core.list_namespaced_service_account(namespace).items:
        time.sleep(0.1)
    work = Path(tempfile.mkdtemp(prefix="poiesis-soak-"))
    pg_dir, pg_port = tempfile.mkdtemp(prefix="poiesis-soak-pg-"), str(postgres.free_port())
    url = subprocess.run([PG, "up", pg_dir, pg_port], check=True, capture_output=True, text=True)
    database_url = url.stdout.strip().splitlines()[-1]
    database_secret(core, namespace, database_url)
    settings = write_config(
        work / "poiesis.toml",
        kubeconfig,
        namespace,
        api_server,
        tolerations(5) + "[tctl]\nstart_timeout_seconds = 60\nended_grace_seconds = 5\nresync_seconds = 2\n",
        ttl_seconds_after_finished=30,
    )
    env = {"POIESIS_CONFIG": str(settings), "POIESIS_LOG_FORMAT": "text"}
    tctl_env = os.environ | env | {"POIESIS_DATABASE_URL": database_url, "POIESIS_POD_NAME": "tctl-0"}
    tctl_env["POIESIS_PORT"] = str(postgres.free_port())
    tasks: dict[str, str] = {}  # id -> kind
    evicted: set[str] = set()
    samples: dict[str, list[int]] = {"api": [], "tctl": []}
    faults: list[str] = []
    done = threading.Event()
    with running_server("api", database_url, work, env) as server, (work / "tctl.log").open("wb") as log:
        tctl = subprocess.Popen(
            [sys.executable, "-m", "poiesis.entrypoints.cli", "tctl"], env=tctl_env, stdout=log, stderr=log
        )
        http = httpx.Client(base_url=server.tes, timeout=20)

        def sample() -> None:
            while not done.wait(10):
                samples["api"].append(rss_kib(server.process.pid))
                samples["tctl"].append(rss_kib(tctl.pid))

        def cancel_later(task_id: str) -> None:
            time.sleep(3)
            for _ in range(60):
                try:
                    if http.post(f"/tasks/{task_id}:cancel").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(1)

        def evict() -> str:
            """A long task of its own, evicted once its executor runs: PREEMPTED."""
            task_id = http.post(
                "/tasks", json={"executors": [{"image": BUSYBOX, "command": ["sleep", "300"]}]}
            ).json()["id"]
            tasks[task_id] = "evicted"
            evicted.add(task_id)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                for pod in core.list_namespaced_pod(namespace, label_selector=f"{LABEL}={task_id}").items:
                    statuses = pod.status.init_container_statuses or []
                    if any(s.name == "executor-0" and s.state.running for s in statuses):
                        core.create_namespaced_pod_eviction(
                            pod.metadata.name,
                            namespace,
                            {"metadata": {"name": pod.metadata.name, "namespace": namespace}},
                        )
                        return f"evicted {pod.metadata.name}"
                time.sleep(1)
            return f"eviction: task {task_id} never ran"

        def pause(what: list[str], start: list[str], seconds: float) -> str:
            subprocess.run(what, check=True, capture_output=True)
            try:
                time.sleep(seconds)
            finally:
                subprocess.run(start, check=True, capture_output=True)
            return f"{' '.join(what[1:])} for {seconds:.0f} s"

        fault_kinds = itertools.cycle(
            [
                lambda: pause([REAL_NODE, "stop", "kubelet"], [REAL_NODE, "start", "kubelet"], 10),
                lambda: pause([REAL_NODE, "stop", "containerd"], [REAL_NODE, "start", "containerd"], 8),
                lambda: pause([PG, "stop", pg_dir], [PG, "up", pg_dir, pg_port], 30),
                evict,
                lambda: pause(
                    [REAL_NODE, "stop", "control-plane"], [REAL_NODE, "start", "control-plane"], 20
                ),
            ]
        )

        def inject() -> None:
            while not done.wait(every * 60):
                began = time.monotonic()
                faults.append(f"{time.strftime('%H:%M:%S')} {next(fault_kinds)()}")
                print(f"[soak] fault: {faults[-1]} ({time.monotonic() - began:.0f} s)", flush=True)

        threads = [threading.Thread(target=sample, daemon=True), threading.Thread(target=inject, daemon=True)]
        for thread in threads:
            thread.start()
        kinds = itertools.cycle(KINDS)
        started = time.monotonic()
        refused = 0
        while time.monotonic() - started < minutes * 60:
            kind = next(kinds)
            try:
                response = http.post("/tasks", json=KINDS[kind])
            except httpx.TransportError:
                refused += 1
                continue
            if response.status_code == 200:
                task_id = response.json()["id"]
                tasks[task_id] = kind
                if kind == "cancel":
                    threading.Thread(target=cancel_later, args=(task_id,), daemon=True).start()
            else:
                refused += 1  # 503 while PostgreSQL is down: nothing was accepted
            time.sleep(1 / rate)
        done.set()
        threads[1].join()  # a fault under way ends first
        print(f"[soak] {len(tasks)} tasks created in {minutes:.0f} min; {refused} creates refused (503)")
        deadline = time.monotonic() + 600
        ended: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline and len(ended) < len(tasks):
            for task_id in list(tasks):
                if task_id not in ended:
                    task = http.get(f"/tasks/{task_id}", params={"view": "FULL"}).json()
                    if task.get("state") in TERMINAL:
                        ended[task_id] = task
            time.sleep(2)
        wrong = []
        counts: Counter[tuple[str, str]] = Counter()
        for task_id, kind in tasks.items():
            task = ended.get(task_id) or http.get(f"/tasks/{task_id}", params={"view": "FULL"}).json()
            counts[(kind, task["state"])] += 1
            ok = task["state"] == "PREEMPTED" if task_id in evicted else right(kind, task)
            if not ok:
                lines = (task.get("logs") or [{}])[0].get("system_logs")
                wrong.append(f"{task_id} {kind}: {task['state']} {lines}")
        samples["api"].append(rss_kib(server.process.pid))
        samples["tctl"].append(rss_kib(tctl.pid))
        stop(tctl)
    subprocess.run([PG, "down", pg_dir], check=False, capture_output=True)
    core.delete_namespace(namespace, propagation_policy="Background")
    print("[soak] faults:\n  " + "\n  ".join(faults))
    for (kind, state), n in sorted(counts.items()):
        print(f"[soak] {kind:9s} {state:15s} {n}")
    print(f"[soak] evicted by the soak: {len(evicted)}")
    for name, values in samples.items():
        if values:
            print(
                f"[soak] {name} RSS MiB: first {values[0] / 1024:.1f}, peak {max(values) / 1024:.1f}, "
                f"last {values[-1] / 1024:.1f} ({len(values)} samples)"
            )
    print(f"[soak] {len(tasks) - len(wrong)} of {len(tasks)} tasks ended as their kind says")
    for line in wrong:
        print(f"[soak] WRONG {line}")
    return 1 if wrong else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--every", type=float, default=4, help="minutes between faults")
    parser.add_argument("--rate", type=float, default=0.5, help="creates per second")
    args = parser.parse_args()
    kubeconfig = os.environ.get("POIESIS_REAL_NODE_KUBECONFIG")
    if kubeconfig:  # inside the node's network namespace
        sys.exit(soak(args.minutes, args.every, args.rate, kubeconfig))
    up = subprocess.run([REAL_NODE, "up"], check=True, stdout=subprocess.PIPE, text=True).stdout
    try:
        exports = dict(item.split("=", 1) for item in up.strip().splitlines()[-1].split()[1:])
        code = subprocess.run(
            [
                REAL_NODE,
                "exec",
                "env",
                f"POIESIS_REAL_NODE_KUBECONFIG={exports['KUBECONFIG']}",
                sys.executable,
                __file__,
                *sys.argv[1:],
            ],
            check=False,
        ).returncode
    finally:
        subprocess.run([REAL_NODE, "down"], check=False)
    sys.exit(code)


if __name__ == "__main__":
    main()
