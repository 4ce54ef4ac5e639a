"""The Cluster contract (tests/contracts/cluster.py) on the local backend: `poiesis serve` running the
executors in its bubblewrap sandbox."""

from __future__ import annotations

import itertools
import shlex
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tes

from tests.contracts.cluster import *  # noqa: F403 - the contract's tests, collected here
from tests.support.server import Server, local_serve
from tests.support.tasks import sleepers, wait_ended

if not Path("/usr/bin/bwrap").exists():
    pytest.skip(
        "bubblewrap is not installed: run scripts/test, or apt-get install bubblewrap",
        allow_module_level=True,
    )

_markers = itertools.count(1)


class LocalRuns:
    keeps_output = True

    def __init__(self, server: Server) -> None:
        self.server = server
        self.client = tes.HTTPClient(server.url, timeout=10)
        self.marker = ""

    def exits(
        self, code: int, *, stdout: str = "", stderr: str = "", ignore_error: bool = False
    ) -> tes.Executor:
        script = f"printf %s {shlex.quote(stdout)}; printf %s {shlex.quote(stderr)} >&2; exit {code}"
        return tes.Executor(image="alpine", command=["sh", "-c", script], ignore_error=ignore_error or None)

    def hangs(self) -> tes.Executor:
        # A sleep this process can tell apart from any other on the machine.
        self.marker = f"600.{next(_markers)}{time.monotonic_ns() % 1000}"
        return tes.Executor(image="alpine", command=["sleep", self.marker])

    def wait(self, task_id: str, timeout: float = 60) -> tes.Task:
        return wait_ended(self.client, task_id, timeout)

    def executor_running(self, task_id: str, index: int) -> bool:
        return bool(sleepers(self.marker))

    def left_nothing(self, task_id: str) -> None:
        assert sleepers(self.marker) == [], "the executor's process is gone"
        assert self.server.workspaces is not None
        deadline = time.monotonic() + 10
        while (self.server.workspaces / task_id).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not (self.server.workspaces / task_id).exists(), "the workspace is removed"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRuns]:
    with local_serve(tmp_path_factory.mktemp("contract")) as server:
        yield LocalRuns(server)
