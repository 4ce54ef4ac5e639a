"""`file://` URLs, confined to the directories the operator allows.

A task must not read the server's own files (nor write over them), so a `file://` URL is accepted
only when its real path, with every symbolic link resolved, lies inside one of `roots`. No roots
means `file://` is off.

A file that is already where it is to go (a shared volume seen at both the URL and the task path:
the same file) is not copied.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from urllib.parse import unquote, urlsplit

from poiesis.adapters.storage.errors import os_error, remove_quietly
from poiesis.domain.staging import is_plain_path
from poiesis.ports.storage import Reason, RemoteObject, StorageError


def _same(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


class LocalFiles:
    def __init__(self, roots: list[str]) -> None:
        self.roots = [os.path.realpath(r) for r in roots]

    def _path(self, url: str) -> str:
        # A plain path is the file's own name, character for character; a URL's path is quoted.
        path = url if is_plain_path(url) else unquote(urlsplit(url).path)
        if not self.roots:
            raise StorageError(Reason.ACCESS_DENIED, url, "file:// is not enabled on this server")
        real = os.path.realpath(path)
        if not any(real == root or real.startswith(root + os.sep) for root in self.roots):
            raise StorageError(Reason.ACCESS_DENIED, url, "outside the directories this server allows")
        return real

    async def download(self, url: str, dest: str) -> int:
        source = self._path(url)

        def run() -> int:
            if _same(source, dest):
                return os.path.getsize(dest)
            try:
                shutil.copyfile(source, dest)
            except IsADirectoryError as exc:
                raise StorageError(Reason.NOT_FOUND, url, "is a directory; use type DIRECTORY") from exc
            except OSError as exc:
                remove_quietly(dest)
                raise os_error(url, exc) from exc
            return os.path.getsize(dest)

        return await asyncio.to_thread(run)

    async def upload(self, src: str, url: str) -> int:
        target = self._path(url)

        def run() -> int:
            if _same(src, target):
                return os.path.getsize(target)
            try:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copyfile(src, target)
            except OSError as exc:
                raise os_error(url, exc) from exc
            return os.path.getsize(target)

        return await asyncio.to_thread(run)

    async def list(self, url: str) -> list[RemoteObject]:
        top = self._path(url)

        def run() -> list[RemoteObject]:
            found = []
            for directory, _, names in os.walk(top):
                for name in names:
                    local = os.path.join(directory, name)
                    if os.path.isfile(local):
                        rel = os.path.relpath(local, top)
                        found.append(RemoteObject(rel, os.path.getsize(local)))
            return sorted(found, key=lambda o: o.relative)

        return await asyncio.to_thread(run)
