"""The Cluster contract: what every backend does with a task's executors, seen through the TES API.
Not collected here: a backend's suite provides a `runs` fixture (a `Runs`) and imports these tests
(tests/integration/local/test_cluster_contract.py for the local backend,
tests/integration/k8s/test_cluster_contract.py for Kubernetes on the test cluster).

Each backend says how to make an executor that exits with a code (and writes some output, where
the backend keeps it), one that hangs, and what "nothing left behind" means for it.
"""

from __future__ import annotations

import itertools
import time
from typing import Protocol

import tes


class Runs(Protocol):
    client: tes.HTTPClient
    keeps_output: bool
    """Whether executors' stdout and stderr reach the task log (kwok runs no program)."""

    def exits(
        self, code: int, *, stdout: str = "", stderr: str = "", ignore_error: bool = False
    ) -> tes.Executor: ...

    def hangs(self) -> tes.Executor: ...

    def wait(self, task_id: str, timeout: float = 60) -> tes.Task: ...

    def executor_running(self, task_id: str, index: int) -> bool: ...

    def left_nothing(self, task_id: str) -> None:
        """Assert that the backend holds nothing of the task any more (processes, Pods, files)."""
        ...


def until(probe: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not probe():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout:.0f} s"
        time.sleep(0.05)


def test_a_failing_executor_stops_the_task(runs: Runs) -> None:
    task_id = runs.client.create_task(
        tes.Task(
            executors=[runs.exits(0), runs.exits(3, stderr="failing\n"), runs.exits(0, stdout="never\n")]
        )
    )
    task = runs.wait(task_id)
    assert task.state == "EXECUTOR_ERROR"
    logs = task.logs[0].logs
    assert [log.exit_code for log in logs] == [0, 3], "the executor after the failing one never ran"
    if runs.keeps_output:
        assert logs[1].stderr == "failing\n"


def test_ignore_error_runs_the_next_executor_and_keeps_the_real_code(runs: Runs) -> None:
    task_id = runs.client.create_task(
        tes.Task(
            executors=[runs.exits(0), runs.exits(3, ignore_error=True), runs.exits(0, stdout="went-on\n")]
        )
    )
    task = runs.wait(task_id)
    # Documented: an executor that failed under ignore_error still makes the task EXECUTOR_ERROR.
    assert task.state == "EXECUTOR_ERROR"
    logs = task.logs[0].logs
    assert [log.exit_code for log in logs] == [0, 3, 0]
    if runs.keeps_output:
        assert logs[2].stdout == "went-on\n"


def test_cancel_in_the_middle_of_an_executor(runs: Runs) -> None:
    task_id = runs.client.create_task(tes.Task(executors=[runs.exits(0), runs.hangs()]))
    until(lambda: runs.client.get_task(task_id).state == "RUNNING", "RUNNING")
    until(lambda: runs.executor_running(task_id, 1), "executor 1 running")
    runs.client.cancel_task(task_id)
    assert runs.client.get_task(task_id).state in ("CANCELING", "CANCELED")
    task = runs.wait(task_id)
    assert task.state == "CANCELED"
    assert [log.exit_code for log in task.logs[0].logs] == [0], "the hanging executor never exited"
    runs.left_nothing(task_id)


def test_every_executor_exiting_zero_completes_the_task_in_order(runs: Runs) -> None:
    task_id = runs.client.create_task(
        tes.Task(executors=[runs.exits(0, stdout=f"step {i}\n") for i in range(3)])
    )
    task = runs.wait(task_id)
    assert task.state == "COMPLETE"
    logs = task.logs[0].logs
    assert [log.exit_code for log in logs] == [0, 0, 0]
    assert all(a.end_time <= b.start_time for a, b in itertools.pairwise(logs))
    if runs.keeps_output:
        assert [log.stdout for log in logs] == [f"step {i}\n" for i in range(3)]
