"""Where `file://` URLs and plain paths may point: the directory trees an operator opens to tasks.

Embedded mode opens `file_roots`; on Kubernetes each shared volume (a claim or an NFS export) is an
area at the path it serves. A task's file URL must lie inside an area open to its owner, an output's
inside one that is writable. An area *in place* (a shared volume mounted into the executors) shows
its files to the executors at their own paths: a task's input or output path inside it must then be
its URL's path (the file is used where it is, never copied), and nothing of the task volume is
mounted there.

Pure rules: the door (`submission`) checks them, the renderer mounts by them; the filers check the
real paths again (a link that leaves an area is refused where it is followed).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

import msgspec

from poiesis.domain.staging import has_wildcard, is_plain_path, within
from poiesis.domain.tes import Output, Task


class Area(msgspec.Struct, kw_only=True, frozen=True):
    path: str
    """Absolute and normalized; the area holds this directory and everything below it."""
    read_only: bool = False
    in_place: bool = False
    """Mounted into the executors at `path`: files inside are used where they are."""
    owners: frozenset[str] = frozenset()
    """The owners whose tasks may use it; empty, everyone's."""

    def holds(self, path: str) -> bool:
        return within(path, self.path)

    def open_to(self, owner: str | None) -> bool:
        return not self.owners or owner in self.owners


def file_path(url: str) -> str:
    """The path a file URL names: a plain path as it is, a `file://` URL's path unquoted."""
    return url if is_plain_path(url) else unquote(urlsplit(url).path)


def is_file_url(url: str) -> bool:
    return is_plain_path(url) or urlsplit(url).scheme.lower() == "file"


def area_of(path: str, areas: Iterable[Area]) -> Area | None:
    """The innermost area holding `path`."""
    best: Area | None = None
    for area in areas:
        if area.holds(path) and (best is None or len(area.path) > len(best.path)):
            best = area
    return best


def url_problem(url: str, *, writes: bool, owner: str | None, areas: tuple[Area, ...]) -> str | None:
    """Why the file URL `url` may not be used by `owner`'s task, or None."""
    if not is_plain_path(url) and urlsplit(url).netloc not in ("", "localhost"):
        return f"{url!r} names a host; a file:// URL names a file on this service (file:///path)"
    path = file_path(url)
    if "\x00" in path:
        return "must not contain a NUL character"
    if not path.startswith("/") or posixpath.normpath(path) != path.rstrip("/"):
        return f"{url!r} must name a normalized absolute path (no '..', '.' or '//')"
    open_ = [a for a in areas if a.open_to(owner)]
    if not open_:
        return "file:// URLs and plain paths are not enabled for your tasks on this service"
    area = area_of(path, open_)
    if area is None:
        allowed = ", ".join(sorted(a.path for a in open_))
        return f"{path!r} is outside the directories this service allows ({allowed})"
    if writes and area.read_only:
        return f"{path!r} is on a read-only volume ({area.path})"
    return None


def _output_place(output: Output) -> str:
    """The path an output's URL stands for: for a wildcard, the URL is where `path_prefix` goes."""
    return output.path_prefix.rstrip("/") if has_wildcard(output.path) and output.path_prefix else output.path


def in_place_problems(task: Task, areas: tuple[Area, ...]) -> tuple[str, str] | None:
    """(field, message) of the first path inside an in-place area that is not its URL's own file."""
    placed = [a for a in areas if a.in_place]
    if not placed:
        return None

    def problem(path: str, url: str | None, place: str) -> str | None:
        area = area_of(path, placed)
        if area is None:
            return None
        if url is not None and is_file_url(url) and file_path(url).rstrip("/") == place:
            return None
        return (
            f"{path!r} is on the shared volume mounted at {area.path}, so it must be its URL's own "
            f"file (url {place!r}); use a path outside {area.path} to have it copied"
        )

    for i, x in enumerate(task.inputs or []):
        if (found := problem(x.path, x.url, x.path)) is not None:
            return f"inputs[{i}].path", found
    for i, o in enumerate(task.outputs or []):
        if (found := problem(o.path, o.url, _output_place(o))) is not None:
            return f"outputs[{i}].path", found
    for i, v in enumerate(task.volumes or []):
        if (area := area_of(v, placed)) is not None:
            return f"volumes[{i}]", f"{v!r} is on the shared volume at {area.path}; volumes are the task's"
    for i, e in enumerate(task.executors):
        for name in ("stdout", "stderr"):
            path = getattr(e, name)
            if path and (area := area_of(path, placed)) is not None and area.read_only:
                return f"executors[{i}].{name}", f"{path!r} is on a read-only volume ({area.path})"
    return None


def named(task: Task, areas: Iterable[Area]) -> list[Area]:
    """The areas a task's input and output URLs lie in (each once, in the order given)."""
    urls = [x.url for x in task.inputs or [] if x.url] + [o.url for o in task.outputs or []]
    paths = [file_path(u) for u in urls if is_file_url(u)]
    return [a for a in areas if any(a.holds(p) for p in paths)]
