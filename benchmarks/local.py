"""Overhead of the local backend: an empty task (one `true` executor) from submit to COMPLETE.

    uv run python benchmarks/local.py [--tasks 200] [--concurrency 4]

Starts `poiesis serve` (SQLite, the bubblewrap sandbox) and prints, first for tasks one at a time,
then for a burst of `--tasks` submitted at once: submit-to-COMPLETE p50/p99, and tasks per minute
at the configured concurrency. A run of `true` itself takes about a millisecond; what is printed is
Poiesis' overhead (state writes, sandbox set-up, polling granularity of 10 ms).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.support.server import running_server  # noqa: E402

TASK = {"executors": [{"image": "alpine", "command": ["true"]}]}


def wait_complete(client: httpx.Client, base: str, task_id: str) -> None:
    while True:
        state = client.get(f"{base}/tasks/{task_id}").json()["state"]
        if state == "COMPLETE":
            return
        if state not in ("QUEUED", "INITIALIZING", "RUNNING"):
            raise SystemExit(f"task {task_id} ended {state}")
        time.sleep(0.01)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--sequential", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="poiesis-bench-local-") as tmp:
        env = {
            "POIESIS_BACKEND": "local",
            "POIESIS_LOCAL_RUNTIME": "bwrap",
            "POIESIS_LOCAL_MAX_TASKS": str(args.concurrency),
            "POIESIS_LOCAL_WORKSPACES": f"{tmp}/ws",
            "POIESIS_LOG_LEVEL": "WARNING",
        }
        with (
            running_server("serve", f"sqlite:///{tmp}/bench.db", Path(tmp), env) as server,
            httpx.Client() as client,
        ):
            base = server.tes
            one: list[float] = []
            for _ in range(args.sequential):
                started = time.perf_counter()
                task_id = client.post(f"{base}/tasks", json=TASK).json()["id"]
                wait_complete(client, base, task_id)
                one.append(time.perf_counter() - started)

            started = time.perf_counter()
            submitted = {}
            for _ in range(args.tasks):
                submitted[client.post(f"{base}/tasks", json=TASK).json()["id"]] = time.perf_counter()
            done: dict[str, float] = {}
            while len(done) < len(submitted):
                for task_id in submitted:
                    if task_id not in done:
                        state = client.get(f"{base}/tasks/{task_id}").json()["state"]
                        if state == "COMPLETE":
                            done[task_id] = time.perf_counter()
                        elif state not in ("QUEUED", "INITIALIZING", "RUNNING"):
                            raise SystemExit(f"task {task_id} ended {state}")
                time.sleep(0.01)
            elapsed = time.perf_counter() - started
    burst = [done[t] - submitted[t] for t in submitted]
    print(f"empty task (one `true` executor), sandbox runtime, {args.concurrency} tasks at once")
    print(
        f"  one at a time ({args.sequential}): submit->COMPLETE p50 {statistics.median(one) * 1000:.0f} ms,"
        f" p99 {percentile(one, 99) * 1000:.0f} ms"
    )
    print(
        f"  burst of {args.tasks}: {args.tasks / elapsed * 60:.0f} tasks/minute;"
        f" submit->COMPLETE p50 {statistics.median(burst):.2f} s,"
        f" p99 {percentile(burst, 99):.2f} s (queueing included)"
    )


if __name__ == "__main__":
    main()
