"""The local backend heals: under creates racing cancels, with its SQLite store locked out from under
it for longer than any write waits, no task is left QUEUED, INITIALIZING, RUNNING or CANCELING once
the load stops, and no workspace is left behind."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.server import running_server, sandbox_workspaces

if not Path("/usr/bin/bwrap").exists():
    pytest.skip("bubblewrap is not installed: run scripts/test", allow_module_level=True)

JSON = {"Content-Type": "application/json"}
TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"}
TASK = (
    b'{"executors": [{"image": "alpine", "command": ["sleep", "0.2"]},'
    b' {"image": "alpine", "command": ["true"]}]}'
)


def test_creates_racing_cancels_with_the_store_locked_leave_nothing_unfinished(tmp_path: Path) -> None:
    database = tmp_path / "tes.db"
    with sandbox_workspaces() as workspaces:
        run_the_load(database, workspaces, tmp_path)


def run_the_load(database: Path, workspaces: Path, tmp_path: Path) -> None:
    env = {
        "POIESIS_BACKEND": "local",
        "POIESIS_LOCAL_RUNTIME": "bwrap",
        "POIESIS_LOCAL_WORKSPACES": str(workspaces),
        "POIESIS_LOCAL_MAX_TASKS": "4",
        "POIESIS_LOCAL_RECONCILE_SECONDS": "1",
    }
    created: list[str] = []
    stop = threading.Event()
    rng = random.Random(7)

    with running_server("serve", f"sqlite:///{database}", tmp_path, env) as server:

        def load() -> None:
            with httpx.Client(timeout=60) as http:
                while not stop.is_set():
                    try:
                        response = http.post(f"{server.tes}/tasks", content=TASK, headers=JSON)
                        if response.status_code == 200:
                            created.append(response.json()["id"])
                        if created and rng.random() < 0.5:
                            http.post(f"{server.tes}/tasks/{rng.choice(created)}:cancel", headers=JSON)
                    except httpx.TransportError:
                        pass
                    time.sleep(0.1)

        workers = [threading.Thread(target=load) for _ in range(3)]
        for w in workers:
            w.start()
        time.sleep(5)
        # Another process holds SQLite's write lock for longer than the busy timeout (30 s).
        lock = sqlite3.connect(database, timeout=60, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        time.sleep(32)
        lock.execute("ROLLBACK")
        lock.close()
        time.sleep(4)
        stop.set()
        for w in workers:
            w.join()

        deadline = time.monotonic() + 90
        unfinished: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = {
                t["id"]: t["state"]
                for t in httpx.get(f"{server.tes}/tasks", params={"page_size": 2000}, timeout=30).json()[
                    "tasks"
                ]
            }
            unfinished = {k: v for k, v in states.items() if v not in TERMINAL}
            if not unfinished:
                break
            time.sleep(1)
        log = server.log.read_text()
    leftovers = list(workspaces.iterdir())
    assert len(created) > 20
    assert set(created) <= set(states)
    assert unfinished == {}
    assert leftovers == []
    assert "Task exception was never retrieved" not in log
    ends = {s: list(states.values()).count(s) for s in set(states.values())}
    print(f"{len(created)} tasks created; ends: {ends}")
