"""TaskStager: a task's inputs onto its workspace, and its outputs from it (services.staging.Stager
is the one implementation; the local backend and the filer process use it through this port)."""

from __future__ import annotations

from typing import Protocol

from poiesis.domain.errors import PoiesisError
from poiesis.domain.tes import OutputFileLog, Task
from poiesis.ports.storage import Workspace


class StagingFailed(PoiesisError):
    """A transfer failed; the message is the line for the task's `system_logs`."""


class TaskStager(Protocol):
    async def stage_in(self, task: Task, workspace: Workspace) -> int:
        """Every input in place; the bytes written. Raises StagingFailed."""
        ...

    async def stage_out(
        self, task: Task, workspace: Workspace, *, missing_ok: bool = False
    ) -> list[OutputFileLog]:
        """Every output uploaded; their file logs, only once all succeeded. Raises StagingFailed.
        `missing_ok`: an output that does not exist is skipped (after an executor failed)."""
        ...
