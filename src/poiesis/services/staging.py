"""The filers: stage a task's inputs onto its volume and upload its outputs.

Both backends use this: on Kubernetes from the `tif`/`tof` init containers (`poiesis filer`), in
embedded mode in process. Transfers run in parallel up to a bound; the first failure stops the rest
and becomes one `StagingFailed` whose message is the `system_logs` line: which input or output, its
URL without secrets, and the cause. Output file logs are returned only when every upload succeeded,
so nothing partial is ever reported as uploaded.
"""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import Awaitable, Callable

import msgspec

from poiesis.domain.staging import has_wildcard, join_url, redact, relative_to, wildcard_target
from poiesis.domain.tes import FileType, Input, Output, OutputFileLog, Task
from poiesis.ports.staging import StagingFailed
from poiesis.ports.storage import ObjectStorage, Reason, StorageError, Workspace

__all__ = ["Stager", "StagingFailed"]


class _Transfer(msgspec.Struct, frozen=True):
    what: str
    """'input 0 (/data/in/a.txt)': how the failure message names the input or output."""
    url: str
    path: str


def _label(kind: str, index: int, item: Input | Output) -> str:
    return f"{kind} {index} ({item.name or item.path})"


def _local_failure(what: str, path: str, error: OSError) -> StagingFailed:
    return StagingFailed(f"{what}: cannot use {path} on the task volume: {error.strerror or error}")


def _failure(what: str, url: str, error: StorageError) -> StagingFailed:
    detail = f": {error.detail}" if error.detail else ""
    way = "from" if what.startswith("input") else "to"
    return StagingFailed(f"{what} {way} {redact(url)}: {error.reason}{detail}")


async def _bounded(limit: int, jobs: list[Callable[[], Awaitable[None]]]) -> None:
    """Run `jobs` at most `limit` at a time; the first exception cancels the rest and is raised."""
    if not jobs:
        return
    queue = iter(jobs)

    async def worker() -> None:
        for job in queue:
            await job()

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(limit, len(jobs))):
                group.create_task(worker())
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None


class Stager:
    def __init__(self, storage: ObjectStorage, *, parallel: int = 8) -> None:
        self._storage = storage
        self._parallel = max(1, parallel)

    async def stage_in(self, task: Task, workspace: Workspace) -> int:
        """Put every input at its path; returns the bytes staged."""
        transfers: list[_Transfer] = []
        staged = 0
        for i, item in enumerate(task.inputs or []):
            what = _label("input", i, item)
            if item.content is not None:
                data = item.content.encode()
                try:
                    await workspace.write(item.path, data)
                except OSError as exc:
                    raise _local_failure(what, item.path, exc) from exc
                staged += len(data)
                continue
            url = item.url or ""
            if item.type is FileType.FILE:
                transfers.append(_Transfer(what, url, item.path))
                continue
            try:
                found = await self._storage.list(url)
            except StorageError as exc:
                raise _failure(what, url, exc) from exc
            if not found:
                raise _failure(what, url, StorageError(Reason.NOT_FOUND, url, "no objects under this URL"))
            transfers += [
                _Transfer(what, join_url(url, obj.relative), posixpath.join(item.path, obj.relative))
                for obj in found
            ]
        sizes: list[int] = []

        def download(t: _Transfer) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                try:
                    sizes.append(await self._storage.download(t.url, workspace.local(t.path)))
                except StorageError as exc:
                    raise _failure(t.what, t.url, exc) from exc
                except OSError as exc:
                    raise _local_failure(t.what, t.path, exc) from exc

            return run

        await _bounded(self._parallel, [download(t) for t in transfers])
        return staged + sum(sizes)

    async def _expand(self, i: int, item: Output, workspace: Workspace, missing_ok: bool) -> list[_Transfer]:
        what = _label("output", i, item)
        if has_wildcard(item.path):
            transfers = []
            for match in await workspace.glob(item.path):
                for f in await workspace.files(match) or []:
                    url = wildcard_target(item.url, item.path_prefix or "", f.path)
                    transfers.append(_Transfer(what, url, f.path))
            return transfers  # a wildcard that matches nothing uploads nothing
        files = await workspace.files(item.path)
        if files is None and missing_ok:
            return []
        if files is None:
            missing = StorageError(Reason.NOT_FOUND, item.url, f"nothing at {item.path} to upload")
            raise _failure(what, item.url, missing)
        return [_Transfer(what, join_url(item.url, relative_to(f.path, item.path)), f.path) for f in files]

    async def stage_out(
        self, task: Task, workspace: Workspace, *, missing_ok: bool = False
    ) -> list[OutputFileLog]:
        """Upload every output; returns one log per uploaded file, in output then path order.
        `missing_ok`: an output that does not exist is skipped (after an executor failed)."""
        transfers: list[_Transfer] = []
        for i, item in enumerate(task.outputs or []):
            transfers += await self._expand(i, item, workspace, missing_ok)
        sizes: dict[int, int] = {}

        def upload(n: int, t: _Transfer) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                try:
                    sizes[n] = await self._storage.upload(workspace.local(t.path), t.url)
                except StorageError as exc:
                    raise _failure(t.what, t.url, exc) from exc
                except OSError as exc:
                    raise _local_failure(t.what, t.path, exc) from exc

            return run

        await _bounded(self._parallel, [upload(n, t) for n, t in enumerate(transfers)])
        return [
            OutputFileLog(url=t.url, path=t.path, size_bytes=str(sizes[n])) for n, t in enumerate(transfers)
        ]
