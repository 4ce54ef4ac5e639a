"""Local file I/O for the storage adapters, and its errors in the words of `StorageError`."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import AsyncIterator
from typing import Any

from poiesis.ports.storage import Reason, StorageError

_REASONS = {
    errno.ENOENT: Reason.NOT_FOUND,
    errno.EACCES: Reason.ACCESS_DENIED,
    errno.EPERM: Reason.ACCESS_DENIED,
    errno.ENOSPC: Reason.DISK_FULL,
    errno.EDQUOT: Reason.DISK_FULL,
    errno.ECONNREFUSED: Reason.UNREACHABLE,
    errno.EHOSTUNREACH: Reason.UNREACHABLE,
    errno.ENETUNREACH: Reason.UNREACHABLE,
    errno.ETIMEDOUT: Reason.UNREACHABLE,
}


def os_error(url: str, exc: OSError) -> StorageError:
    reason = _REASONS.get(exc.errno or 0, Reason.FAILED)
    if isinstance(exc, TimeoutError):
        reason = Reason.UNREACHABLE
    return StorageError(reason, url, exc.strerror or str(exc))


def remove_quietly(path: str) -> None:
    """Remove a partly written file; nothing partial is left behind."""
    with contextlib.suppress(OSError):
        os.unlink(path)


async def write_stream(chunks: AsyncIterator[Any], dest: str) -> int:
    """Write `chunks` to the file `dest` as they arrive; returns the bytes written. On any failure,
    cancellation included, no file is left at `dest`."""
    size = 0
    try:
        with open(dest, "wb") as f:  # noqa: ASYNC230 (opening is quick; the writes go to a thread)
            async for chunk in chunks:
                await asyncio.to_thread(f.write, chunk)
                size += memoryview(chunk).nbytes
    except BaseException:
        remove_quietly(dest)
        raise
    return size


async def read_stream(src: str, chunk_bytes: int) -> AsyncIterator[bytes]:
    with open(src, "rb") as f:  # noqa: ASYNC230 (opening is quick; the reads go to a thread)
        while chunk := await asyncio.to_thread(f.read, chunk_bytes):
            yield chunk


async def file_size(path: str) -> int:
    return (await asyncio.to_thread(os.stat, path)).st_size
