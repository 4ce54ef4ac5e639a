"""The Kubernetes backend on the test cluster: latency, API writes and the recorder's footprint.

    uv run python benchmarks/k8s.py [--tasks 30]

Starts the test cluster (scripts/test-cluster), a private PostgreSQL and `poiesis api` with the
Kubernetes backend; one `poiesis trec` process per task Pod, as in the tests. Tasks (two executors
each) run one after another, so each recorder has the machine to itself as it would have its node
(a burst of recorder processes on two cores measures the cores). It prints:
- POST sent -> the Job seen by a watch, p50/p99;
- the last executor's end seen by a watch (the status change the recorder acts on) -> the task's
  terminal state visible through GET, p50/p99 (GET polled every 20 ms);
- Kubernetes API write calls per task (the apiserver's own request counters: POST and PATCH on jobs,
  configmaps, serviceaccounts, roles and rolebindings, status subresources excluded);
- the recorder's start-up (process start -> its first look at the Pod) and peak RSS (VmHWM), p50/max.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from kubernetes import client, config, watch  # noqa: E402

from tests.conftest import fresh_postgres_url_sync  # noqa: E402
from tests.support import cluster, postgres  # noqa: E402
from tests.support.recorders import Recorders  # noqa: E402
from tests.support.server import running_server  # noqa: E402

LABEL = "poiesis.io/task"
WRITES = re.compile(
    r'^apiserver_request_total\{(?=[^}]*resource="(jobs|configmaps|serviceaccounts|roles|rolebindings)")'
    r'(?=[^}]*subresource="")(?=[^}]*verb="(POST|PATCH)")[^}]*\} (\d+)',
    re.M,
)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def writes(api: client.ApiClient) -> int:
    method, url, headers, _, _ = api.param_serialize("GET", "/metrics", auth_settings=["BearerToken"])
    response = api.call_api(method, url, header_params=headers)
    response.read()
    text = response.data.decode()
    return sum(int(m.group(3)) for m in WRITES.finditer(text))


def template(server: str) -> str:
    import asyncio

    import sqlalchemy as sa

    from poiesis.adapters.sqlalchemy.engine import create_engine, migrate
    from tests.conftest import FakeClock  # noqa: F401 (keeps the fixtures' module importable)

    async def build() -> None:
        admin = create_engine(server)
        async with admin.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(sa.text("CREATE DATABASE poiesis_template"))
        await admin.dispose()
        engine = create_engine(server.rsplit("/", 1)[0] + "/poiesis_template")
        await migrate(engine)
        await engine.dispose()

    asyncio.run(build())
    return "poiesis_template"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=30)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="poiesis-bench-k8s-") as tmp,
        cluster.test_cluster() as kubeconfig,
    ):
        work = Path(tmp)
        with postgres.private_postgres() as pg:
            database = fresh_postgres_url_sync(pg, template(pg))
            api = config.new_client_from_config(config_file=kubeconfig)
            core: Any = client.CoreV1Api(api)
            batch: Any = client.BatchV1Api(api)
            namespace = "bench"
            core.create_namespace({"metadata": {"name": namespace}})
            while not core.list_namespaced_service_account(namespace).items:
                time.sleep(0.1)
            toml = work / "poiesis.toml"
            toml.write_text(
                f'backend = "kubernetes"\nkubeconfig = "{kubeconfig}"\n'
                f'[kubernetes]\nnamespace = "{namespace}"\n'
                'storage_class = "kwok-volume"\nimage = "poiesis:bench"\n'
            )
            job_seen: dict[str, float] = {}
            pod_end: dict[str, float] = {}
            stop = threading.Event()

            def watch_jobs() -> None:
                for event in watch.Watch().stream(batch.list_namespaced_job, namespace, timeout_seconds=600):
                    if event["type"] == "ADDED":
                        job_seen.setdefault(event["object"].metadata.labels[LABEL], time.perf_counter())
                    if stop.is_set():
                        return

            def watch_pods() -> None:
                # The status change the recorder acts on: the last executor ended (or the Pod did).
                # On the test cluster the Pod's own end is no anchor: kwok ends it on a timer, not
                # when the recorder lets it.
                for event in watch.Watch().stream(core.list_namespaced_pod, namespace, timeout_seconds=600):
                    pod = event["object"]
                    steps = {s.name: s for s in pod.status.init_container_statuses or []}
                    last = steps.get(f"executor-{len(body['executors']) - 1}")
                    if pod.status.phase in ("Succeeded", "Failed") or (last and last.state.terminated):
                        pod_end.setdefault(pod.metadata.labels[LABEL], time.perf_counter())
                    if stop.is_set():
                        return

            def quietly(target: Callable[[], None]) -> Callable[[], None]:
                def run() -> None:
                    try:
                        target()
                    except Exception:
                        if not stop.is_set():  # else the cluster went away under the watch
                            raise

                return run

            body = {
                "executors": [
                    {"image": "a", "command": ["a"]},
                    {"image": "b", "command": ["b"]},
                ]
            }
            for target in (watch_jobs, watch_pods):
                threading.Thread(target=quietly(target), daemon=True).start()
            env = {"POIESIS_CONFIG": str(toml), "POIESIS_LOG_LEVEL": "WARNING"}
            with (
                running_server("api", database, work, env) as server,
                Recorders(api, kubeconfig, namespace, database, work) as recorders,
                httpx.Client(timeout=30) as http,
            ):
                before = writes(api)
                posted: dict[str, float] = {}
                visible: dict[str, float] = {}
                for _ in range(args.tasks):
                    sent = time.perf_counter()
                    task_id = http.post(f"{server.tes}/tasks", json=body).json()["id"]
                    posted[task_id] = sent
                    deadline = time.monotonic() + 120
                    while time.monotonic() < deadline:
                        state = http.get(f"{server.tes}/tasks/{task_id}").json()["state"]
                        if state in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"):
                            visible[task_id] = time.perf_counter()
                            break
                        time.sleep(0.02)
                per_task = (writes(api) - before) / len(posted)
                time.sleep(2)
                startup = []
                for pod_name, spawned in recorders.spawned.items():
                    log = (work / pod_name / "trec.log").read_text()
                    match = re.search(r"^(\S+ \S+) INFO poiesis.trec recording", log, re.M)
                    if match:
                        first = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                        startup.append(first - spawned)
                rss = list(recorders.peak_rss.values())
            stop.set()
    to_job = [(job_seen[t] - posted[t]) * 1000 for t in posted if t in job_seen]
    to_api = [(visible[t] - pod_end[t]) * 1000 for t in posted if t in visible and t in pod_end]
    print(f"Kubernetes backend on the test cluster, {len(posted)} tasks of two executors, one after another")
    for label, values in (
        ("POST sent -> Job seen by a watch", to_job),
        ("last executor ended -> state in GET", to_api),
    ):
        print(f"  {label + ':':38} p50 {pct(values, 50):7.1f} ms   p99 {pct(values, 99):7.1f} ms")
    print(f"  Kubernetes API writes per task:       {per_task:.2f}")
    if startup:
        print(
            f"  trec start-up (exec -> first look):   p50 {statistics.median(startup) * 1000:7.0f} ms"
            f"   max {max(startup) * 1000:7.0f} ms"
        )
    if rss:
        print(
            f"  trec peak RSS:                        p50 {statistics.median(rss) / 2**20:7.1f} MiB"
            f"   max {max(rss) / 2**20:7.1f} MiB"
        )


if __name__ == "__main__":
    main()
