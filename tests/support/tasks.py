"""Waiting on a task through a TES client, as a user's script would."""

from __future__ import annotations

import time

import psutil
import tes

TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"}


def wait_ended(client: tes.HTTPClient, task_id: str, timeout: float = 60, every: float = 0.1) -> tes.Task:
    """The task (FULL view) once it is in a terminal state; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        task = client.get_task(task_id, view="FULL")
        if task.state in TERMINAL:
            return task
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} still {task.state} after {timeout} s")
        time.sleep(every)


def sleepers(marker: str) -> list[psutil.Process]:
    """The `sleep <marker>` processes on this machine (a local task's executor, told apart by its
    argument)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmdline = p.info["cmdline"] or []
        if cmdline[:1] == ["sleep"] and marker in cmdline:
            found.append(p)
    return found
