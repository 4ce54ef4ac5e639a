"""Where a task's data goes: pure rules shared by the filers and both backends.

- An output matched by a wildcard goes to `url` + the match minus `path_prefix`, joined by exactly one
  `/`; a DIRECTORY input or output keeps its structure the same way.
- A URL shown to a person (a `system_logs` line, a log record) never carries secrets: user info and
  query strings (presigned signatures) are removed.
- Executors see inputs, outputs and volumes at their absolute paths. Backends mount the task volume at
  a few directories (`mount_dirs`): the smallest set that covers every such path, none inside another.
"""

from __future__ import annotations

import posixpath
from collections.abc import Collection
from urllib.parse import urlsplit, urlunsplit

from poiesis.domain.tes import FileType, Task

SCHEMES = frozenset({"s3", "gs", "az", "abfs", "abfss", "http", "https", "ftp", "file"})
"""URL schemes the filers understand."""

WILDCARD_CHARS = frozenset("*?[")


def has_wildcard(path: str) -> bool:
    return any(c in WILDCARD_CHARS for c in path)


def is_plain_path(url: str) -> bool:
    """An absolute path given as a URL: the spec's `/path/to/my/file`, a `file://` URL."""
    return url.startswith("/") and not url.startswith("//")


def scheme_of(url: str) -> str:
    return "file" if is_plain_path(url) else urlsplit(url).scheme.lower()


def join_url(base: str, relative: str) -> str:
    """`base` + `relative` with exactly one `/` between them."""
    relative = relative.lstrip("/")
    if not relative:
        return base
    return base.rstrip("/") + "/" + relative


def within(path: str, directory: str) -> bool:
    """`path` is `directory` or lies below it."""
    return directory == "/" or path == directory or path.startswith(directory + "/")


def relative_to(path: str, prefix: str) -> str:
    """`path` without `prefix`, as a relative path ('' when they are the same)."""
    rest = path[len(prefix) :] if path.startswith(prefix) else path
    return rest.lstrip("/")


def wildcard_target(url: str, path_prefix: str, match: str) -> str:
    return join_url(url, relative_to(match, path_prefix))


def redact(url: str) -> str:
    """The URL without user info (`user:password@`), query or fragment."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def wildcard_root(path: str) -> str:
    """The directory above the first path component that holds a wildcard."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if has_wildcard(part):
            return "/".join(parts[:i]) or "/"
    return posixpath.dirname(path)


def covering_dir(path: str, kind: FileType) -> str:
    """The directory whose mount makes `path` visible (and writable) to an executor."""
    path = posixpath.normpath(path)
    if has_wildcard(path):
        return wildcard_root(path)
    if kind is FileType.DIRECTORY:
        return path
    return posixpath.dirname(path)


def data_dirs(task: Task) -> list[str]:
    """Every directory an executor needs from the task volume, before merging."""
    dirs = [covering_dir(i.path, i.type) for i in task.inputs or []]
    dirs += [covering_dir(o.path, o.type) for o in task.outputs or []]
    dirs += [covering_dir(v, FileType.DIRECTORY) for v in task.volumes or []]
    return dirs


def mount_dirs(task: Task, elsewhere: Collection[str] = ()) -> list[str]:
    """The smallest set of directories covering every input, output and volume, none nested in
    another, sorted. Mounting the task volume at each shows every TES path where the task expects it.
    Paths inside `elsewhere` (directories mounted from another volume) need none."""
    return outermost([d for d in data_dirs(task) if not any(within(d, e) for e in elsewhere)])


def outermost(dirs: list[str]) -> list[str]:
    """The directories of `dirs` that are inside no other one, sorted; O(n log n) for any input."""
    unique = set(dirs)
    if "/" in unique:
        return ["/"]
    # Sorted with a trailing "/", every directory comes before everything below it, and all of that
    # follows it at once: comparing with the last one kept suffices.
    result: list[str] = []
    for d in sorted(unique, key=lambda p: p + "/"):
        if not result or not (d + "/").startswith(result[-1] + "/"):
            result.append(d)
    return sorted(result)
