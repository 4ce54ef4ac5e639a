"""Shared volumes: the operator's existing claims and NFS exports that `file://` URLs and plain
paths name (a workflow engine's work dir on the cluster's shared filesystem, reference data).

A volume serves the paths below its `path`, where it is mounted. A task whose input or output URL
lies on it gets it in its Pod, and no other task does:

    mode = "mount"  the executors see the volume at `path`: a task's input or output whose path is
                    its URL's own path is used where it is (no copy); one elsewhere is copied by the
                    filers between the volume and the task volume
    mode = "stage"  only the filers see the volume; executors get copies on the task volume

The filers mount it at `path` (read-only in `tif`) and check each real path against it, so a link
that leaves the volume is refused; in mode "mount" they mount it on the task volume's root as well,
which shows a file used in place at both its URL and its path: the filers see it is the same file
and copy nothing.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from poiesis.adapters.kubernetes.taskpod import VOLUME_ROOT
from poiesis.domain.areas import Area, named
from poiesis.domain.staging import within
from poiesis.domain.tes import Task

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,53}[a-z0-9])?$")
_RESERVED = ("/tes", "/proc", "/sys", "/dev", "/var/run/secrets")


class Nfs(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    server: str
    path: str


class SharedVolume(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    name: str
    """A DNS label; the Pod's volume is `shared-<name>`."""
    path: str
    """The absolute path the volume serves and is mounted at."""
    claim: str | None = None
    """An existing PersistentVolumeClaim in the task namespace (ReadWriteMany or ReadOnlyMany for
    tasks on several nodes)."""
    nfs: Nfs | None = None
    """An NFS export, mounted by the node."""
    read_only: bool = False
    mode: Literal["mount", "stage"] = "mount"
    owners: list[str] = []
    """The owners whose tasks may use it (principals as the API records them); empty, everyone's."""

    @property
    def volume(self) -> str:
        return f"shared-{self.name}"

    def area(self) -> Area:
        return Area(
            path=self.path,
            read_only=self.read_only,
            in_place=self.mode == "mount",
            owners=frozenset(self.owners),
        )


def problems(volumes: list[SharedVolume]) -> list[str]:
    found: list[str] = []
    for i, v in enumerate(volumes):
        at = f"shared_volumes[{i}]"
        if not _NAME.match(v.name):
            found.append(f"{at}.name: {v.name!r} is not a DNS label of at most 55 characters")
        if (v.claim is None) == (v.nfs is None):
            found.append(f"{at}: give exactly one of claim and nfs")
        p = v.path
        segments = p.split("/")
        if not p.startswith("/") or p == "/" or p.endswith("/") or "" in segments[1:] or "." in segments:
            found.append(f"{at}.path: {p!r} must be a normalized absolute path other than /")
        elif ".." in segments or "," in p:
            found.append(f"{at}.path: {p!r} must not hold '..' or ','")
        elif any(within(p, r) or within(r, p) for r in _RESERVED):
            found.append(f"{at}.path: {p!r} overlaps a directory every task Pod needs for itself")
        for j, w in enumerate(volumes[:i]):
            if w.name == v.name:
                found.append(f"{at}.name: {v.name!r} is also shared_volumes[{j}]'s")
            if within(p, w.path) or within(w.path, p):
                found.append(f"{at}.path: {p!r} overlaps shared_volumes[{j}] ({w.path})")
    return found


def used(task: Task, volumes: list[SharedVolume]) -> list[SharedVolume]:
    """The shared volumes the task's URLs name."""
    areas = named(task, [v.area() for v in volumes])
    paths = {a.path for a in areas}
    return [v for v in volumes if v.path in paths]


def pod_volume(volume: SharedVolume) -> dict[str, Any]:
    if volume.nfs is not None:
        source: dict[str, Any] = {"nfs": {"server": volume.nfs.server, "path": volume.nfs.path}}
        if volume.read_only:
            source["nfs"]["readOnly"] = True
    else:
        source = {"persistentVolumeClaim": {"claimName": volume.claim}}
        if volume.read_only:
            source["persistentVolumeClaim"]["readOnly"] = True
    return {"name": volume.volume, **source}


def _mount(volume: SharedVolume, at: str, read_only: bool) -> dict[str, Any]:
    return {"name": volume.volume, "mountPath": at, "readOnly": read_only or volume.read_only}


def filer_mounts(volumes: list[SharedVolume], *, writes: bool) -> list[dict[str, Any]]:
    mounts = [_mount(v, v.path, not writes) for v in volumes]
    mounts += [_mount(v, VOLUME_ROOT + v.path, not writes) for v in volumes if v.mode == "mount"]
    return mounts


def executor_mounts(volumes: list[SharedVolume]) -> list[dict[str, Any]]:
    return [_mount(v, v.path, False) for v in volumes if v.mode == "mount"]
