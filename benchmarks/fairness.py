"""A small user's wait behind another user's flood, in embedded mode.

    uv run python benchmarks/fairness.py [--flood 300] [--few 5] [--slots 3] [--seconds 0.3]

Starts `poiesis serve` (SQLite, the bubblewrap sandbox, basic authentication) once per scenario:

- alone: the small user's `--few` tasks on an idle server;
- flood: a user submits `--flood` tasks (each `sleep --seconds`), then the small user its few;
  the slots go in fair order (the owner with fewer tasks in flight first);
- flood, capped: the same with `max_active_tasks_per_user = slots - 1`.

For each it prints the small user's turnaround (create to COMPLETE) p50 and max, and how long the
flood still had to run when the small user came: what a first-come-first-served queue would have
added to each of the small user's tasks.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from benchmarks.local import percentile  # noqa: E402
from tests.support.server import add_users, local_serve  # noqa: E402

USERS = {"flooder": "flooder-secret-1", "small": "small-secret-22"}
BASE = "/ga4gh/tes/v1"


def task(seconds: float) -> dict[str, object]:
    return {"executors": [{"image": "alpine", "command": ["sleep", str(seconds)]}]}


def wait_done(client: httpx.Client, task_id: str) -> float:
    while True:
        state = client.get(f"{BASE}/tasks/{task_id}", params={"view": "MINIMAL"}).json()["state"]
        if state == "COMPLETE":
            return time.monotonic()
        if state not in ("QUEUED", "INITIALIZING", "RUNNING"):
            raise SystemExit(f"task {task_id} ended {state}")
        time.sleep(0.02)


def scenario(args: argparse.Namespace, flood: int, per_user: int) -> tuple[list[float], float]:
    """The small user's turnarounds, and the seconds the flood still ran after the small user came."""
    with tempfile.TemporaryDirectory(prefix="poiesis-bench-fair-") as tmp:
        work = Path(tmp)
        env = {
            "POIESIS_AUTH": "basic",
            "POIESIS_BASIC_USERS_FILE": str(add_users(work / "users", USERS)),
            "POIESIS_LOG_LEVEL": "WARNING",
            "POIESIS_MAX_ACTIVE_TASKS_PER_USER": str(per_user),
        }
        with local_serve(work, env=env, max_tasks=args.slots) as server:
            flooder = httpx.Client(base_url=server.url, auth=("flooder", USERS["flooder"]), timeout=30)
            small = httpx.Client(base_url=server.url, auth=("small", USERS["small"]), timeout=30)
            flood_ids = [
                flooder.post(f"{BASE}/tasks", json=task(args.seconds)).json()["id"] for _ in range(flood)
            ]
            came = time.monotonic()
            starts = []
            ids = []
            for _ in range(args.few):
                starts.append(time.monotonic())
                ids.append(small.post(f"{BASE}/tasks", json=task(args.seconds)).json()["id"])
            ends: list[float] = [0.0] * len(ids)
            waiters = [
                threading.Thread(target=lambda i=i: ends.__setitem__(i, wait_done(small, ids[i])))
                for i in range(len(ids))
            ]
            for waiter in waiters:
                waiter.start()
            flood_end = max((wait_done(flooder, t) for t in flood_ids), default=came)
            for waiter in waiters:
                waiter.join()
            flooder.close()
            small.close()
            return [end - start for start, end in zip(starts, ends, strict=True)], flood_end - came


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--flood", type=int, default=300)
    parser.add_argument("--few", type=int, default=5)
    parser.add_argument("--slots", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=0.3)
    args = parser.parse_args()
    cap = max(1, args.slots - 1)
    rows = [
        ("alone", *scenario(args, 0, 0)),
        ("flood, fair release", *scenario(args, args.flood, 0)),
        (f"flood, fair release, {cap} per user", *scenario(args, args.flood, cap)),
    ]
    print(
        f"{args.few} small tasks beside a flood of {args.flood}"
        f" ({args.slots} slots, tasks of {args.seconds} s)"
    )
    print(f"{'scenario':<36} {'small p50 s':>11} {'small max s':>11} {'FIFO would add s':>17}")
    for name, turnarounds, rest in rows:
        print(f"{name:<36} {percentile(turnarounds, 50):>11.2f} {max(turnarounds):>11.2f} {rest:>17.1f}")


if __name__ == "__main__":
    main()
