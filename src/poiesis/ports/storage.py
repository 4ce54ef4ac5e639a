"""ObjectStorage: where users keep their data, addressed by URL; Workspace: the task volume.

Contract for every ObjectStorage adapter:
- `download` streams the object at `url` into the local file `dest` (never holding it whole in
  memory) and returns its size; on failure no file is left at `dest`.
- `upload` streams the local file `src` to `url` and returns the bytes sent; large files go in parts.
- `list` returns every object under `url` taken as a directory prefix, with paths relative to it.
- Every failure is a `StorageError` whose `reason` says what a user can act on. Transient errors are
  retried with backoff for a bounded time, so a wrong host fails in seconds.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

import msgspec

from poiesis.domain.errors import PoiesisError
from poiesis.domain.staging import redact


class Reason(StrEnum):
    NOT_FOUND = "not found"
    ACCESS_DENIED = "access denied"
    UNREACHABLE = "unreachable"
    DISK_FULL = "disk full"
    UNSUPPORTED = "not supported"
    FAILED = "failed"


class StorageError(PoiesisError):
    def __init__(self, reason: Reason, url: str, detail: str = "") -> None:
        self.reason = reason
        self.url = redact(url)
        self.detail = detail
        super().__init__(f"{self.url}: {reason}" + (f" ({detail})" if detail else ""))


class RemoteObject(msgspec.Struct, frozen=True):
    relative: str
    size: int


class ObjectStorage(Protocol):
    async def download(self, url: str, dest: str) -> int: ...

    async def upload(self, src: str, url: str) -> int: ...

    async def list(self, url: str) -> list[RemoteObject]: ...


class LocalFile(msgspec.Struct, frozen=True):
    path: str
    """The TES path (absolute, as executors see it)."""
    size: int


class Workspace(Protocol):
    """The task volume as the filers see it, addressed by TES paths."""

    def local(self, path: str) -> str:
        """Where the TES `path` is on this machine (its parent directories exist)."""
        ...

    async def write(self, path: str, data: bytes) -> None: ...

    async def files(self, path: str) -> list[LocalFile] | None:
        """Every regular file at or under `path`, sorted; None when nothing is there."""
        ...

    async def glob(self, pattern: str) -> list[str]:
        """TES paths matching the POSIX wildcard `pattern`, sorted."""
        ...
