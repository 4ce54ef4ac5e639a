"""Validation of a submitted task: from what a client POSTed to the task Poiesis stores.

A client's body is decoded into `NewTask`, which declares only the fields a client may set; the
read-only fields of tesTask (`id`, `state`, `logs`, `creation_time`) and unknown keys are ignored.
`accept` then applies the TES rules and the server's limits, and either returns the task with its
warnings or raises `InvalidTask` naming the first field at fault.
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Iterable
from urllib.parse import urlsplit

import msgspec

from poiesis.domain.errors import InvalidTask
from poiesis.domain.staging import covering_dir, has_wildcard
from poiesis.domain.states import State
from poiesis.domain.tes import Executor, FileType, Input, Output, Resources, Task


class NewInput(msgspec.Struct, kw_only=True, frozen=True):
    path: str
    name: str | None = None
    description: str | None = None
    url: str | None = None
    type: FileType = FileType.FILE
    content: str | None = None
    streamable: bool | None = None


class NewOutput(msgspec.Struct, kw_only=True, frozen=True):
    path: str
    url: str
    name: str | None = None
    description: str | None = None
    type: FileType = FileType.FILE
    path_prefix: str | None = None


class NewTask(msgspec.Struct, kw_only=True, frozen=True):
    executors: list[Executor]
    name: str | None = None
    description: str | None = None
    inputs: list[NewInput] | None = None
    outputs: list[NewOutput] | None = None
    resources: Resources | None = None
    volumes: list[str] | None = None
    tags: dict[str, str] | None = None


class Rules(msgspec.Struct, kw_only=True, frozen=True):
    """What this deployment accepts beyond the TES schema."""

    backend_parameters: frozenset[str] = frozenset()
    """Supported `resources.backend_parameters` keys, lower-cased."""
    max_content_bytes: int = 4 * 1024 * 1024
    max_executors: int = 256
    url_schemes: frozenset[str] = frozenset()
    """URL schemes the filers can stage, lower-cased; empty accepts any."""


class Accepted(msgspec.Struct, kw_only=True, frozen=True):
    task: Task
    warnings: list[str]
    """Lines for the task's `system_logs`, e.g. dropped backend parameters."""


def _absolute(field: str, path: str) -> str:
    if not path.startswith("/"):
        raise InvalidTask(field, f"must be an absolute path, got {path!r}")
    if "\x00" in path:
        raise InvalidTask(field, "must not contain a NUL character")
    if ".." in path.split("/"):
        raise InvalidTask(field, f"must not contain '..' segments, got {path!r}")
    return path


def _data_path(field: str, path: str, kind: FileType) -> str:
    """An absolute path whose directory can hold the task volume: never '/' itself."""
    _absolute(field, path)
    if covering_dir(path, kind) == "/":
        what = "a directory" if kind is FileType.DIRECTORY else "a file's directory"
        raise InvalidTask(field, f"{path!r} would make '/' {what}; use a path inside a directory")
    return path


def _url(field: str, url: str, rules: Rules) -> None:
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as exc:
        raise InvalidTask(field, f"is not a valid URL: {exc}") from exc
    if not scheme:
        raise InvalidTask(field, f"{url!r} has no scheme (such as s3:// or https://)")
    if rules.url_schemes and scheme not in rules.url_schemes:
        raise InvalidTask(
            field, f"scheme {scheme!r} is not supported; supported: {', '.join(sorted(rules.url_schemes))}"
        )


def _unique_paths(field: str, paths: Iterable[str]) -> None:
    seen: set[str] = set()
    for i, path in enumerate(paths):
        normal = posixpath.normpath(path)
        if normal in seen:
            raise InvalidTask(f"{field}[{i}].path", f"{path!r} is used by another {field[:-1]}")
        seen.add(normal)


def _executor(i: int, e: Executor) -> Executor:
    f = f"executors[{i}]"
    if not e.image.strip():
        raise InvalidTask(f"{f}.image", "must not be empty")
    if not e.command:
        raise InvalidTask(f"{f}.command", "must hold at least the program to run")
    for name in ("workdir", "stdin", "stdout", "stderr"):
        value = getattr(e, name)
        if value is not None:
            _absolute(f"{f}.{name}", value)
    for key in e.env or {}:
        if not key or "=" in key or "\x00" in key:
            raise InvalidTask(f"{f}.env", f"{key!r} is not a valid variable name")
    return e


def _input(i: int, new: NewInput, rules: Rules) -> Input:
    f = f"inputs[{i}]"
    _data_path(f"{f}.path", new.path, new.type)
    if new.content:
        if len(new.content.encode()) > rules.max_content_bytes:
            raise InvalidTask(
                f"{f}.content",
                f"is larger than the limit of {rules.max_content_bytes} bytes",
            )
        if new.type is FileType.DIRECTORY:
            raise InvalidTask(f"{f}.type", "inline content makes a FILE, not a DIRECTORY")
    elif not new.url:
        raise InvalidTask(f"{f}.url", "is required unless content is set")
    else:
        _url(f"{f}.url", new.url, rules)
    return Input(
        path=new.path,
        type=new.type,
        name=new.name,
        description=new.description,
        url=new.url,
        content=new.content,
        streamable=new.streamable,
    )


def _output(i: int, new: NewOutput, rules: Rules) -> Output:
    f = f"outputs[{i}]"
    _data_path(f"{f}.path", new.path, new.type)
    if not new.url:
        raise InvalidTask(f"{f}.url", "must not be empty")
    _url(f"{f}.url", new.url, rules)
    if has_wildcard(new.path):
        if not new.path_prefix:
            raise InvalidTask(f"{f}.path_prefix", "is required when path contains wildcards")
        _absolute(f"{f}.path_prefix", new.path_prefix)
        if not new.path.startswith(new.path_prefix):
            raise InvalidTask(
                f"{f}.path_prefix",
                f"{new.path_prefix!r} is not a prefix of {new.path!r}",
            )
        if has_wildcard(new.path_prefix):
            raise InvalidTask(f"{f}.path_prefix", "must not contain wildcards")
    return Output(
        path=new.path,
        url=new.url,
        type=new.type,
        name=new.name,
        description=new.description,
        path_prefix=new.path_prefix,
    )


def _positive(field: str, value: float | None) -> None:
    if value is not None and (not math.isfinite(value) or value <= 0):
        raise InvalidTask(field, f"must be a positive number, got {value!r}")


def _resources(r: Resources | None, rules: Rules) -> tuple[Resources | None, list[str]]:
    if r is None:
        return None, []
    _positive("resources.cpu_cores", r.cpu_cores)
    _positive("resources.ram_gb", r.ram_gb)
    _positive("resources.disk_gb", r.disk_gb)
    warnings: list[str] = []
    params = r.backend_parameters
    if params:
        unsupported = sorted(k for k in params if k.lower() not in rules.backend_parameters)
        if unsupported and r.backend_parameters_strict:
            raise InvalidTask(
                f"resources.backend_parameters.{unsupported[0]}",
                "is not supported by this service and backend_parameters_strict is true; supported: "
                + (", ".join(sorted(rules.backend_parameters)) or "none"),
            )
        if unsupported:
            warnings.append("unsupported backend_parameters ignored: " + ", ".join(unsupported))
            params = {k: v for k, v in params.items() if k not in unsupported} or None
    return msgspec.structs.replace(r, backend_parameters=params), warnings


def accept(new: NewTask, *, task_id: str, creation_time: str, rules: Rules) -> Accepted:
    """Apply the TES rules to a submission. Raises InvalidTask naming the first field at fault."""
    if not new.executors:
        raise InvalidTask("executors", "at least one executor is required")
    if len(new.executors) > rules.max_executors:
        raise InvalidTask("executors", f"at most {rules.max_executors} executors are allowed")
    executors = [_executor(i, e) for i, e in enumerate(new.executors)]
    inputs = [_input(i, x, rules) for i, x in enumerate(new.inputs or [])]
    outputs = [_output(i, x, rules) for i, x in enumerate(new.outputs or [])]
    _unique_paths("inputs", (x.path for x in inputs))
    volumes = [_data_path(f"volumes[{i}]", v, FileType.DIRECTORY) for i, v in enumerate(new.volumes or [])]
    resources, warnings = _resources(new.resources, rules)
    task = Task(
        id=task_id,
        state=State.QUEUED,
        executors=executors,
        creation_time=creation_time,
        name=new.name,
        description=new.description,
        inputs=inputs or None,
        outputs=outputs or None,
        resources=resources,
        volumes=volumes or None,
        tags=new.tags or None,
    )
    return Accepted(task=task, warnings=warnings)
