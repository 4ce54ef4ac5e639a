"""Opening paths inside a task's workspace without ever leaving it.

The server runs with more rights than a task, so it must not open a path in a workspace the way
the task could steer it: an executor can leave a symbolic link, a FIFO or a device where a later
step expects a file or a directory. Every path here is resolved one component at a time from a
descriptor of the workspace root, each with O_NOFOLLOW, so a link anywhere in the path is refused
(ELOOP or ENOTDIR) instead of followed, and there is no window between a check and the open. A
file must be a regular file; a FIFO is opened without blocking and refused.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
from collections.abc import Iterator

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(OSError):
    """A path in the workspace is a link, or is not what it must be."""


def _parts(path: str) -> list[str]:
    parts = [p for p in posixpath.normpath("/" + path).split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise UnsafePath(f"{path}: not a plain path")
    return parts


def _step(parent: int, name: str, *, create: bool, owner: tuple[int, int] | None) -> int:
    try:
        return os.open(name, _DIR, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o755, dir_fd=parent)
    fd = os.open(name, _DIR, dir_fd=parent)
    if owner is not None:
        os.fchown(fd, *owner)
    return fd


@contextlib.contextmanager
def directory(
    root: str, path: str, *, create: bool = False, owner: tuple[int, int] | None = None
) -> Iterator[int]:
    """A descriptor of the directory `path` beneath `root` (created, with `owner`, if asked)."""
    fd = os.open(root, _DIR)
    try:
        for name in _parts(path):
            try:
                child = _step(fd, name, create=create, owner=owner)
            except OSError as exc:
                if isinstance(exc, FileNotFoundError):
                    raise
                raise UnsafePath(f"{path}: {name} is a link or not a directory") from None
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def ensure_directory(root: str, path: str, owner: tuple[int, int] | None = None) -> str:
    """Create the directory `path` beneath `root` if missing; its local path, known to hold no link."""
    with directory(root, path, create=True, owner=owner):
        pass
    return root + posixpath.normpath("/" + path)


def open_file(root: str, path: str, *, write: bool, owner: tuple[int, int] | None = None) -> int:
    """A descriptor of the regular file `path` beneath `root`: read, or created and truncated."""
    parts = _parts(path)
    if not parts:
        raise UnsafePath(f"{path}: not a file")
    with directory(root, "/".join(parts[:-1]), create=write, owner=owner) as parent:
        flags = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        flags |= (os.O_WRONLY | os.O_CREAT) if write else os.O_RDONLY
        try:
            fd = os.open(parts[-1], flags, 0o644, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO):  # a link; a FIFO nobody reads
                raise UnsafePath(f"{path}: is a link or not a regular file") from None
            raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePath(f"{path}: is not a regular file")
        os.set_blocking(fd, True)
        if write:
            os.ftruncate(fd, 0)
            if owner is not None:
                os.fchown(fd, *owner)
        return fd
    except BaseException:
        os.close(fd)
        raise


def give(root: str, owner: tuple[int, int]) -> None:
    """Hand every file and directory beneath `root` to `owner`, never following a link (links
    themselves change owner, their targets do not)."""
    os.lchown(root, *owner)
    for directory_path, dirs, files in os.walk(root, followlinks=False):
        for name in (*dirs, *files):
            with contextlib.suppress(FileNotFoundError):
                os.lchown(os.path.join(directory_path, name), *owner)
