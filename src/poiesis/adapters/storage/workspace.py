"""The task volume on this machine: TES path `/a/b` lives at `<root>/a/b`.

Only regular files inside the root are ever offered for upload: a symbolic link an executor left
pointing outside the workspace (say at the server's own files) is skipped, so nothing outside the
task's volume can leak through an output.
"""

from __future__ import annotations

import asyncio
import glob
import os
import posixpath
import stat

from poiesis.ports.storage import LocalFile


class LocalWorkspace:
    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)

    def local(self, path: str) -> str:
        target = self.root + posixpath.normpath("/" + path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        return target

    def directory(self, path: str) -> str:
        """Where the TES directory `path` is on this machine, created if missing."""
        target = self.root + posixpath.normpath("/" + path)
        os.makedirs(target, exist_ok=True)
        return target

    def tes_path(self, local: str) -> str:
        return "/" + os.path.relpath(local, self.root)

    def _inside(self, local: str) -> bool:
        real = os.path.realpath(local)
        return real == self.root or real.startswith(self.root + os.sep)

    async def write(self, path: str, data: bytes) -> None:
        def run() -> None:
            with open(self.local(path), "wb") as f:
                f.write(data)

        await asyncio.to_thread(run)

    def _files(self, path: str) -> list[LocalFile] | None:
        top = self.root + posixpath.normpath("/" + path)
        try:
            info = os.stat(top)
        except OSError:
            return None
        if not self._inside(top):
            return []
        if stat.S_ISREG(info.st_mode):
            return [LocalFile(path=self.tes_path(top), size=info.st_size)]
        found: list[LocalFile] = []
        for directory, _, names in os.walk(top):
            for name in names:
                local = os.path.join(directory, name)
                try:
                    st = os.stat(local)
                except OSError:
                    continue  # a dangling link
                if stat.S_ISREG(st.st_mode) and self._inside(local):
                    found.append(LocalFile(path=self.tes_path(local), size=st.st_size))
        return sorted(found, key=lambda f: f.path)

    async def files(self, path: str) -> list[LocalFile] | None:
        return await asyncio.to_thread(self._files, path)

    async def glob(self, pattern: str) -> list[str]:
        relative = posixpath.normpath("/" + pattern).lstrip("/")
        matches = await asyncio.to_thread(glob.glob, relative, root_dir=self.root)
        return sorted("/" + m for m in matches)
