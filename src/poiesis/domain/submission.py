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

import msgspec

from poiesis.domain.areas import Area, in_place_problems, is_file_url, url_problem
from poiesis.domain.errors import InvalidTask
from poiesis.domain.parameters import Parameter
from poiesis.domain.staging import covering_dir, data_dirs, has_wildcard, outermost, scheme_of, within
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
    """Supported `resources.backend_parameters` keys, lower-cased (the mapped ones included)."""
    parameters: dict[str, Parameter] = {}
    """What the mapped keys become (lower-cased keys); their values are checked here."""
    max_content_bytes: int = 4 * 1024 * 1024
    max_executors: int = 256
    max_inputs: int = 20_000
    max_outputs: int = 20_000
    max_volumes: int = 256
    max_tags: int = 256
    max_env: int = 1024
    """Environment variables of one executor."""
    max_directories: int = 1024
    """Directories the task volume is mounted at (the outermost of every input, output and volume)."""
    max_cpu_cores: int = 1024
    max_gb: float = 1e6
    """The largest `ram_gb` and `disk_gb` (a petabyte)."""
    url_schemes: frozenset[str] = frozenset()
    """URL schemes the filers can stage, lower-cased; empty accepts any."""
    file_areas: tuple[Area, ...] | None = None
    """Where `file://` URLs and plain paths may point (`domain.areas`); None leaves them to the
    filers."""


class Accepted(msgspec.Struct, kw_only=True, frozen=True):
    task: Task
    warnings: list[str]
    """Lines for the task's `system_logs`, e.g. dropped backend parameters."""


def _text(field: str, value: str) -> str:
    """A string that reaches a program, a file name or a URL: no NUL, which would cut it short."""
    if "\x00" in value:
        raise InvalidTask(field, "must not contain a NUL character")
    return value


def _absolute(field: str, path: str) -> str:
    if not path.startswith("/"):
        raise InvalidTask(field, f"must be an absolute path, got {path!r}")
    _text(field, path)
    segments = path.split("/")
    if ".." in segments:
        raise InvalidTask(field, f"must not contain '..' segments, got {path!r}")
    if "//" in path or "." in segments:
        raise InvalidTask(field, f"must be a normalized path (no '//' or '/./'), got {path!r}")
    return path


def _at_most(field: str, items: Iterable[object] | None, limit: int) -> None:
    count = len(list(items or []))
    if count > limit:
        raise InvalidTask(field, f"at most {limit} are allowed, got {count}")


# What the kernel and the runtime give every container: a task's data there would hide them.
_KERNEL_DIRS = ("/proc", "/sys", "/dev")


def _data_path(field: str, path: str, kind: FileType) -> str:
    """An absolute path whose directory can hold the task volume: never '/' itself, nor inside the
    directories the kernel provides."""
    _absolute(field, path)
    if covering_dir(path, kind) == "/":
        what = "a directory" if kind is FileType.DIRECTORY else "a file's directory"
        raise InvalidTask(field, f"{path!r} would make '/' {what}; use a path inside a directory")
    for directory in _KERNEL_DIRS:
        if within(path, directory):
            raise InvalidTask(
                field,
                f"{path!r} is inside {directory}, which each executor gets from the kernel; "
                "use a path elsewhere",
            )
    return path


def _nothing_inside_files(task: Task) -> None:
    """No input, output or volume lies inside a path that an input or output makes a FILE: staging
    or running it would need that file to be a directory."""
    files: dict[str, str] = {}  # a FILE's path -> the first input or output that makes it one
    for i, x in enumerate(task.inputs or []):
        if x.type is FileType.FILE:
            files.setdefault(x.path, f"inputs[{i}]")
    for i, o in enumerate(task.outputs or []):
        if o.type is FileType.FILE and not has_wildcard(o.path):
            files.setdefault(o.path, f"outputs[{i}]")
    paths = [(f"inputs[{i}].path", x.path) for i, x in enumerate(task.inputs or [])]
    paths += [(f"outputs[{i}].path", x.path) for i, x in enumerate(task.outputs or [])]
    paths += [(f"volumes[{i}]", v) for i, v in enumerate(task.volumes or [])]
    # Each path's directories looked up among the FILEs: linear in the paths' lengths, where testing
    # every path against every FILE took a minute for the 12,000 inputs a task may have.
    for field, path in paths:
        parts = path.split("/")
        for end in range(2, len(parts)):
            directory = "/".join(parts[:end])
            if (owner := files.get(directory)) is not None:
                raise InvalidTask(field, f"{path!r} is inside {directory!r}, which {owner} makes a FILE")


def _url(field: str, url: str, rules: Rules, *, writes: bool = False, owner: str | None = None) -> None:
    _text(field, url)
    try:
        scheme = scheme_of(url)
    except ValueError as exc:
        raise InvalidTask(field, f"is not a valid URL: {exc}") from exc
    if not scheme:
        raise InvalidTask(
            field, f"{url!r} has no scheme (such as s3:// or https://) and is not an absolute path"
        )
    if rules.url_schemes and scheme not in rules.url_schemes:
        raise InvalidTask(
            field, f"scheme {scheme!r} is not supported; supported: {', '.join(sorted(rules.url_schemes))}"
        )
    if rules.file_areas is not None and is_file_url(url):
        problem = url_problem(url, writes=writes, owner=owner, areas=rules.file_areas)
        if problem:
            raise InvalidTask(field, problem)


def _unique_paths(field: str, paths: Iterable[str]) -> None:
    seen: set[str] = set()
    for i, path in enumerate(paths):
        normal = posixpath.normpath(path)
        if normal in seen:
            raise InvalidTask(f"{field}[{i}].path", f"{path!r} is used by another {field[:-1]}")
        seen.add(normal)


def _executor(i: int, e: Executor, rules: Rules) -> Executor:
    f = f"executors[{i}]"
    if not e.image.strip():
        raise InvalidTask(f"{f}.image", "must not be empty")
    _text(f"{f}.image", e.image)
    if not e.command:
        raise InvalidTask(f"{f}.command", "must hold at least the program to run")
    for j, arg in enumerate(e.command):
        _text(f"{f}.command[{j}]", arg)
    _at_most(f"{f}.env", e.env, rules.max_env)
    for name in ("workdir", "stdin", "stdout", "stderr"):
        value = getattr(e, name)
        if value is not None:
            _absolute(f"{f}.{name}", value)
    for key, value in (e.env or {}).items():
        if not key or "=" in key or "\x00" in key:
            raise InvalidTask(f"{f}.env", f"{key!r} is not a valid variable name")
        _text(f"{f}.env.{key}", value)
    return e


def _input(i: int, new: NewInput, rules: Rules, owner: str | None) -> Input:
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
        _url(f"{f}.url", new.url, rules, owner=owner)
    return Input(
        path=new.path,
        type=new.type,
        name=new.name,
        description=new.description,
        url=new.url,
        content=new.content,
        streamable=new.streamable,
    )


def _output(i: int, new: NewOutput, rules: Rules, owner: str | None) -> Output:
    f = f"outputs[{i}]"
    _data_path(f"{f}.path", new.path, new.type)
    if not new.url:
        raise InvalidTask(f"{f}.url", "must not be empty")
    _url(f"{f}.url", new.url, rules, writes=True, owner=owner)
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


def _positive(field: str, value: float | None, limit: float) -> None:
    if value is not None and (not math.isfinite(value) or value <= 0):
        raise InvalidTask(field, f"must be a positive number, got {value!r}")
    if value is not None and value > limit:
        raise InvalidTask(field, f"must be at most {limit:g}, got {value!r}")


def _resources(r: Resources | None, rules: Rules) -> tuple[Resources | None, list[str]]:
    if r is None:
        return None, []
    warnings: list[str] = []
    # Nextflow sends `disk_gb` as whole GiB, so a process asking for less than 1 GiB sends 0: a zero
    # amount is no request (the backend's default applies), not a fault.
    for name in ("ram_gb", "disk_gb"):
        if getattr(r, name) == 0:
            r = msgspec.structs.replace(r, **{name: None})
            warnings.append(f"resources.{name} = 0 taken as no request")
    _positive("resources.cpu_cores", r.cpu_cores, rules.max_cpu_cores)
    _positive("resources.ram_gb", r.ram_gb, rules.max_gb)
    _positive("resources.disk_gb", r.disk_gb, rules.max_gb)
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
        mapped = {}
        for key, value in (params or {}).items():
            parameter = rules.parameters.get(key.lower())
            if parameter is None:
                mapped[key] = value
                continue
            field = f"resources.backend_parameters.{key}"
            _text(field, value)
            malformed, unhonoured = parameter.check(value)
            if malformed:
                raise InvalidTask(field, malformed)
            if unhonoured and r.backend_parameters_strict:
                raise InvalidTask(field, f"{unhonoured}, and backend_parameters_strict is true")
            if unhonoured:
                warnings.append(f"backend_parameters {key} ignored: {unhonoured}")
            else:
                mapped[key] = value
        params = mapped or None
    return msgspec.structs.replace(r, backend_parameters=params), warnings


def accept(
    new: NewTask, *, task_id: str, creation_time: str, rules: Rules, owner: str | None = None
) -> Accepted:
    """Apply the TES rules to `owner`'s submission. Raises InvalidTask naming the first field at
    fault."""
    if not new.executors:
        raise InvalidTask("executors", "at least one executor is required")
    if len(new.executors) > rules.max_executors:
        raise InvalidTask("executors", f"at most {rules.max_executors} executors are allowed")
    _at_most("inputs", new.inputs, rules.max_inputs)
    _at_most("outputs", new.outputs, rules.max_outputs)
    _at_most("volumes", new.volumes, rules.max_volumes)
    _at_most("tags", new.tags, rules.max_tags)
    executors = [_executor(i, e, rules) for i, e in enumerate(new.executors)]
    inputs = [_input(i, x, rules, owner) for i, x in enumerate(new.inputs or [])]
    outputs = [_output(i, x, rules, owner) for i, x in enumerate(new.outputs or [])]
    _unique_paths("inputs", (x.path for x in inputs))
    volumes = [_data_path(f"volumes[{i}]", v, FileType.DIRECTORY) for i, v in enumerate(new.volumes or [])]
    resources, warnings = _resources(new.resources, rules)
    for key, value in (new.tags or {}).items():
        _text(f"tags.{key}", key)
        _text(f"tags.{key}", value)
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
    _nothing_inside_files(task)
    # Only the owner's areas: another owner's shared volume is never in this task's Pod.
    mine = tuple(a for a in rules.file_areas or () if a.open_to(owner))
    if mine and (found := in_place_problems(task, mine)):
        raise InvalidTask(*found)
    directories = len(outermost(data_dirs(task)))
    if directories > rules.max_directories:
        raise InvalidTask(
            "inputs",
            f"the inputs, outputs and volumes lie in {directories} separate directories; at most "
            f"{rules.max_directories} are allowed (group files under common directories)",
        )
    return Accepted(task=task, warnings=warnings)
