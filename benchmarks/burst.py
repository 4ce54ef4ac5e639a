"""A burst of tasks into the cluster: Poiesis's rate of released Jobs against a bare client's.

    uv run python benchmarks/burst.py [--tasks 1000] [--concurrency 16]

Starts the test cluster (scripts/test-cluster; fake nodes with room for every Pod), a private
PostgreSQL and `poiesis api` with the Kubernetes backend. Then, one after the other, each in a
namespace of its own and after the cluster has settled from the one before:

- a bare client (the Kubernetes Python client, `--concurrency` threads) makes, for each task, what
  Poiesis makes before it answers a POST: the Job (suspended), its ConfigMap and ServiceAccount, and
  the release of the Job (4 writes). Poiesis also grants each Pod's recorder its Role and
  RoleBinding as the Pod appears (2 more writes, during the burst): the bare client is spared them,
  so the ratio errs against Poiesis;
- `--concurrency` HTTP clients POST the same tasks to Poiesis, which answers once the task is
  stored and its Job released.

Prints both rates (tasks whose Job is released per second), their ratio, and the apiserver's write
calls per task during each (its own request counters: POST and PATCH on jobs, configmaps,
serviceaccounts, roles and rolebindings).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from kubernetes import client, config  # noqa: E402

from benchmarks.k8s import template, writes  # noqa: E402
from poiesis.adapters.kubernetes.render import (  # noqa: E402
    PodSettings,
    render_config_map,
    render_job,
    render_service_account,
)
from poiesis.adapters.kubernetes.taskpod import job_name  # noqa: E402
from poiesis.domain.identity import new_task_id  # noqa: E402
from poiesis.domain.submission import Rules, accept  # noqa: E402
from poiesis.domain.times import rfc3339  # noqa: E402
from poiesis.services.tasks import decode_task  # noqa: E402
from tests.conftest import fresh_postgres_url_sync  # noqa: E402
from tests.support import cluster, postgres  # noqa: E402
from tests.support.server import running_server  # noqa: E402

BODY = (
    b'{"name": "burst", "executors": [{"image": "alpine", "command": ["sleep", "1"]},'
    b' {"image": "alpine", "command": ["true"]}], "tags": {"burst": ""}}'
)


def pods_in(core: Any, namespace: str) -> int:
    count, token = 0, None
    while True:
        page = core.list_namespaced_pod(namespace, limit=500, _continue=token)
        count += len(page.items)
        token = page.metadata._continue
        if not token:
            return count


def settle(core: Any, namespace: str, expected: int) -> None:
    """Wait until the Job controller has made every Pod and the count holds for 5 s."""
    last, steady = -1, time.monotonic()
    while True:
        now = pods_in(core, namespace)
        if now != last:
            last, steady = now, time.monotonic()
        if now >= expected and time.monotonic() - steady > 5:
            return
        time.sleep(1)


def bare(api: client.ApiClient, settings: PodSettings, count: int, concurrency: int) -> float:
    """Tasks per second whose objects the bare client made (Job released)."""
    core: Any = client.CoreV1Api(api)
    batch: Any = client.BatchV1Api(api)
    ns = settings.namespace
    rules = Rules()
    tasks = []
    for _ in range(count):
        moment = datetime.now(UTC)
        tasks.append(
            accept(
                decode_task(BODY), task_id=new_task_id(moment), creation_time=rfc3339(moment), rules=rules
            ).task
        )

    def one(task: Any) -> None:
        job = api.sanitize_for_serialization(batch.create_namespaced_job(ns, render_job(task, settings)))
        core.create_namespaced_config_map(ns, render_config_map(task, settings, job))
        core.create_namespaced_service_account(ns, render_service_account(task, settings, job))
        batch.patch_namespaced_job(job_name(task.id), ns, {"spec": {"suspend": False}})

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, tasks))
    return count / (time.perf_counter() - started)


def through_poiesis(base: str, count: int, concurrency: int) -> float:
    def post(_: int) -> None:
        r = http.post(f"{base}/tasks", content=BODY, headers={"Content-Type": "application/json"})
        r.raise_for_status()

    limits = httpx.Limits(max_connections=concurrency)
    with httpx.Client(timeout=120, limits=limits) as http:
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(post, range(count)))
        return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="poiesis-bench-burst-") as tmp,
        cluster.test_cluster() as kubeconfig,
        postgres.private_postgres() as pg,
    ):
        work = Path(tmp)
        database = fresh_postgres_url_sync(pg, template(pg))
        api = config.new_client_from_config(config_file=kubeconfig)
        core: Any = client.CoreV1Api(api)
        for n in range(-(-2 * args.tasks // 500)):
            cluster.add_fake_node(
                core, f"burst-node-{n}", cpu="64", memory="256Gi", pods="600", ephemeral_storage="10Ti"
            )
        for ns in ("burst-bare", "burst-poiesis"):
            core.create_namespace({"metadata": {"name": ns}})
            while not core.list_namespaced_service_account(ns).items:
                time.sleep(0.1)
        toml = work / "poiesis.toml"
        toml.write_text(
            f'backend = "kubernetes"\nkubeconfig = "{kubeconfig}"\n'
            '[kubernetes]\nnamespace = "burst-poiesis"\ntask_volume = "empty-dir"\nimage = "poiesis:bench"\n'
        )
        settings = PodSettings(namespace="burst-bare", task_volume="empty-dir", image="poiesis:bench")
        print(f"{args.tasks} tasks, {args.concurrency} at a time", flush=True)

        before = writes(api)
        bare_rate = bare(api, settings, args.tasks, args.concurrency)
        bare_writes = (writes(api) - before) / args.tasks
        print(f"bare client: {bare_rate:.1f} tasks/s, {bare_writes:.2f} writes per task", flush=True)
        settle(core, "burst-bare", args.tasks)

        env = {"POIESIS_CONFIG": str(toml), "POIESIS_LOG_LEVEL": "WARNING", "POIESIS_DATABASE_URL": database}
        with running_server("api", database, work, env) as server:
            before = writes(api)
            poiesis_rate = through_poiesis(server.tes, args.tasks, args.concurrency)
            settle(core, "burst-poiesis", args.tasks)
            time.sleep(5)  # the grants of the last Pods
            poiesis_writes = (writes(api) - before) / args.tasks
        print(f"Poiesis: {poiesis_rate:.1f} tasks/s, {poiesis_writes:.2f} writes per task", flush=True)
        print(f"ratio Poiesis / bare client: {poiesis_rate / bare_rate:.2f}")


if __name__ == "__main__":
    main()
