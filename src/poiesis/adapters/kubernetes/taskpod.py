"""The TaskPod's shape, shared by everything that makes it or reads it: the renderer (`render`), the
observers of its status (`observe`, `diagnose`), the recorder (`trec`), the controller and the filers.

One task is one Job wrapping one Pod:

    init  trec         native sidecar: the Task Recorder (the only container with an API token
                       and the database credentials)
    init  setup        copies the static launcher into a shared emptyDir
    init  tif          stages the inputs (left out when there are none)
    init  executor-N   the user's images, in order, through the launcher: redirection without a
                       shell, the real exit code in the termination message; after one failed,
                       the rest are skipped (FAILED_MARK)
    init  tof          uploads the outputs (left out when there are none); after an executor
                       failed, those that exist (a workflow engine's logs)
    main  done         waits until trec has recorded the end, so the Job completes after it

Every object carries `TASK_LABEL=<task id>`. Pure names and types: no I/O, no framework.
"""

from __future__ import annotations

import re

import msgspec

from poiesis.domain.tes import OutputFileLog

TASK_LABEL = "poiesis.io/task"

# Containers
TREC = "trec"
SETUP = "setup"
STAGE_IN = "tif"
STAGE_OUT = "tof"
DONE = "done"
_EXECUTOR_PREFIX = "executor-"

# Paths inside the Pod
VOLUME_ROOT = "/tes/volume"
"""The task volume: every input and output path lives beneath it."""
TASK_DIR = "/tes/task"
"""The task's ConfigMap (the task as JSON, for the filers)."""
BIN_DIR = "/tes/bin"
"""The launcher, copied here by `setup`."""
STATUS_DIR = "/tes/status"
"""Shared by the executors (their stdout/stderr tails), trec and `done` (the recorded mark)."""
OUTPUTS_REPORT = "/.poiesis/outputs.json"
"""Where on the task volume `tof` writes its FilerReport (relative to VOLUME_ROOT)."""
RECORDED_MARK = f"{STATUS_DIR}/recorded"
FAILED_MARK = f"{STATUS_DIR}/failed"
"""Written by the launcher of an executor that failed (in a task with outputs): it exits 0 so that
the Pod goes on, the later executors' launchers skip them, and `tof` uploads what exists."""
SKIPPED = "skipped"
"""How a skipped executor's termination message begins."""
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

EXIT_CODE_MESSAGE = re.compile(r"^exit_code=(-?\d+)(?: started=(\S+) finished=(\S+))?")
"""The launcher's termination message: the executor's real exit code (0 under `ignore_error`), and
its own start and end to the microsecond (the container status has whole seconds)."""


def job_name(task_id: str) -> str:
    return f"tes-{task_id}"


def executor_container(index: int) -> str:
    return f"{_EXECUTOR_PREFIX}{index}"


def executor_index(container: str) -> int | None:
    """The executor a container name belongs to, or None for Poiesis's own containers."""
    if not container.startswith(_EXECUTOR_PREFIX):
        return None
    number = container.removeprefix(_EXECUTOR_PREFIX)
    return int(number) if number.isdigit() else None


def executor_status(index: int) -> str:
    """The launcher's status prefix of executor `index` (`.stdout` and `.stderr` tails)."""
    return f"{STATUS_DIR}/{executor_container(index)}"


class FilerReport(msgspec.Struct, omit_defaults=True):
    """What a filer (`tif`, `tof`) reports when it ends; trec reads `tof`'s for the output logs."""

    direction: str
    ok: bool
    bytes: int = 0
    seconds: float = 0.0
    outputs: list[OutputFileLog] = []
    error: str | None = None


class ReportedOutputs(msgspec.Struct):
    """The part of the stage-out filer's FilerReport that trec reads (other fields are ignored)."""

    outputs: list[OutputFileLog] = []
