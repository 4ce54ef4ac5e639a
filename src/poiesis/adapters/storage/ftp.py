"""FTP through fsspec: one connection per transfer (ftplib connections are not thread-safe).

Credentials come from the URL (`ftp://user:password@host/path`) or the endpoint's `options`
(`username`, `password`); anonymous otherwise. Refused connections and timeouts are retried with
backoff for at most `retry_seconds`; a missing file or a refused login is final.
"""

from __future__ import annotations

import asyncio
import contextlib
import ftplib
import os
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from fsspec.implementations.ftp import FTPFileSystem  # type: ignore[import-untyped]

from poiesis.adapters.storage.endpoints import Endpoints
from poiesis.adapters.storage.errors import os_error, remove_quietly
from poiesis.ports.storage import Reason, RemoteObject, StorageError

T = TypeVar("T")
_BLOCK = 1024 * 1024


class FtpFiles:
    def __init__(
        self, endpoints: Endpoints, *, retry_seconds: float = 10.0, timeout_seconds: float = 30.0
    ) -> None:
        self._endpoints = endpoints
        self._retry_seconds = retry_seconds
        self._timeout = timeout_seconds
        self._made: set[tuple[str, str]] = set()

    def _connect(self, url: str) -> tuple[FTPFileSystem, str]:
        parts = urlsplit(url)
        endpoint = self._endpoints.find(url)
        options: dict[str, Any] = dict(endpoint.options) if endpoint else {}
        username = unquote(parts.username) if parts.username else options.get("username")
        password = unquote(parts.password) if parts.password else options.get("password")
        fs = FTPFileSystem(
            host=parts.hostname or "",
            port=parts.port or 21,
            username=username,
            password=password,
            timeout=self._timeout,
            skip_instance_cache=True,
        )
        return fs, unquote(parts.path) or "/"

    def _run(self, url: str, action: Callable[[FTPFileSystem, str], T]) -> T:
        deadline = time.monotonic() + self._retry_seconds
        delay = 0.1
        while True:
            try:
                fs, path = self._connect(url)
                try:
                    return action(fs, path)
                finally:
                    with contextlib.suppress(OSError, AttributeError):
                        fs.ftp.close()
            except FileNotFoundError as exc:
                raise StorageError(Reason.NOT_FOUND, url, "no such file on the server") from exc
            except ftplib.error_perm as exc:
                text = str(exc)
                reason = Reason.ACCESS_DENIED if text.startswith("530") else Reason.NOT_FOUND
                if text.startswith("553") or text.startswith("550 Permission"):
                    reason = Reason.ACCESS_DENIED
                raise StorageError(reason, url, self._endpoints.scrub(text)) from exc
            except (ConnectionError, TimeoutError, ftplib.error_temp, EOFError) as exc:
                if time.monotonic() + delay > deadline:
                    raise StorageError(Reason.UNREACHABLE, url, str(exc) or type(exc).__name__) from exc
            except OSError as exc:
                raise os_error(url, exc) from exc
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)

    def _make_parents(self, fs: FTPFileSystem, url: str, path: str) -> None:
        """Create the directories above `path`, tolerating parallel uploads creating them too."""
        server = urlsplit(url).netloc
        parts = [p for p in os.path.dirname(path).split("/") if p]
        for i in range(1, len(parts) + 1):
            directory = "/" + "/".join(parts[:i])
            if (server, directory) in self._made:
                continue
            with contextlib.suppress(ftplib.error_perm):
                fs.ftp.mkd(directory)
            self._made.add((server, directory))

    async def download(self, url: str, dest: str) -> int:
        def action(fs: FTPFileSystem, path: str) -> int:
            try:
                with open(dest, "wb") as f:
                    fs.ftp.retrbinary(f"RETR {path}", f.write, blocksize=_BLOCK)
            except BaseException:
                remove_quietly(dest)
                raise
            return os.path.getsize(dest)

        return await asyncio.to_thread(self._run, url, action)

    async def upload(self, src: str, url: str) -> int:
        def action(fs: FTPFileSystem, path: str) -> int:
            self._make_parents(fs, url, path)
            with open(src, "rb") as f:
                fs.ftp.storbinary(f"STOR {path}", f, blocksize=_BLOCK)
            return os.path.getsize(src)

        return await asyncio.to_thread(self._run, url, action)

    async def list(self, url: str) -> list[RemoteObject]:
        def action(fs: FTPFileSystem, path: str) -> list[RemoteObject]:
            top = path.rstrip("/")
            found = fs.find(top, detail=True)
            return sorted(
                (
                    RemoteObject(name[len(top) :].lstrip("/"), int(info.get("size") or 0))
                    for name, info in found.items()
                    if info.get("type") == "file" and name.startswith(top + "/")
                ),
                key=lambda o: o.relative,
            )

        return await asyncio.to_thread(self._run, url, action)
