"""`poiesis filer stage-in|stage-out`: the filers as a process (the `tif`/`tof` init containers).

The task comes as a JSON file (in a Pod, the task's ConfigMap); the task volume is `--root`. On
success the filer writes a JSON report (`--report`; for stage-out, the output file logs) and exits 0.
On failure it writes the `system_logs` line to stderr, to the report and to `--termination-log` (a
Pod's termination message, which the recorder reads from the Pod status), and exits 1. Given
`--after-failure-mark` that exists (an executor failed), stage-out uploads the outputs that exist
and skips the missing ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from pathlib import Path

import msgspec

from poiesis.adapters.kubernetes.taskpod import FilerReport
from poiesis.adapters.storage.endpoints import load_endpoints
from poiesis.adapters.storage.router import StorageRouter
from poiesis.adapters.storage.workspace import LocalWorkspace
from poiesis.domain.tes import Task
from poiesis.entrypoints.settings import Settings
from poiesis.services.staging import Stager, StagingFailed

log = logging.getLogger("poiesis.filer")


def router(settings: Settings) -> StorageRouter:
    return StorageRouter(
        endpoints=load_endpoints(settings.storage_endpoints_file),
        file_roots=settings.file_roots,
        retry_seconds=settings.filer_retry_seconds,
        part_bytes=settings.filer_part_mib * 1024 * 1024,
    )


async def stage(
    settings: Settings, direction: str, task: Task, root: str, *, missing_ok: bool = False
) -> FilerReport:
    workspace = LocalWorkspace(root)
    started = time.monotonic()
    async with router(settings) as storage:
        stager = Stager(storage, parallel=settings.filer_parallel)
        try:
            if direction == "stage-in":
                size = await stager.stage_in(task, workspace)
                return FilerReport(direction, True, bytes=size, seconds=time.monotonic() - started)
            outputs = await stager.stage_out(task, workspace, missing_ok=missing_ok)
            size = sum(int(o.size_bytes) for o in outputs)
            return FilerReport(
                direction, True, bytes=size, seconds=time.monotonic() - started, outputs=outputs
            )
        except StagingFailed as exc:
            return FilerReport(direction, False, seconds=time.monotonic() - started, error=str(exc))


def main(
    settings: Settings,
    direction: str,
    task_file: str,
    root: str,
    report: str | None,
    termination: str | None,
    after_failure_mark: str | None = None,
) -> int:
    try:
        task = msgspec.json.decode(Path(task_file).read_bytes(), type=Task)
    except (OSError, msgspec.ValidationError) as exc:
        print(f"poiesis filer: cannot read the task from {task_file}: {exc}", file=sys.stderr)
        return 2
    # What is staged belongs to the Pod's fsGroup (the task volume's group) and stays writable by
    # that group, so an executor running as another user of the Pod can still write it.
    os.umask(0o002)
    # An executor failed (its launcher left the mark): what exists is uploaded, the rest skipped.
    after_failure = bool(after_failure_mark) and os.path.lexists(after_failure_mark or "")
    if after_failure:
        log.info("an executor of task %s failed: uploading the outputs that exist", task.id)
    result = asyncio.run(stage(settings, direction, task, root, missing_ok=after_failure))
    if report:
        Path(report).parent.mkdir(parents=True, exist_ok=True)
        Path(report).write_bytes(msgspec.json.encode(result))
    if result.ok:
        log.info("%s of task %s: %d bytes in %.1f s", direction, task.id, result.bytes, result.seconds)
        return 0
    print(result.error, file=sys.stderr)
    if termination:
        with contextlib.suppress(OSError):
            Path(termination).write_text(result.error or "")
    return 1
