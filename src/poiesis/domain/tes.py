"""The TES v1.1.0 data model as frozen msgspec structs: the stored task and its wire form are one type.

Optional fields default to None and structs omit defaults when encoded, so a rendered task never
carries a JSON `null` (py-tes rejects them). Fields the server must always fill in (an input's or
output's `type`, a task's `state`) have no default and are therefore always present.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from poiesis.domain.parameters import Parameter
from poiesis.domain.states import State


class FileType(StrEnum):
    FILE = "FILE"
    DIRECTORY = "DIRECTORY"


class View(StrEnum):
    MINIMAL = "MINIMAL"
    BASIC = "BASIC"
    FULL = "FULL"


class _Model(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    pass


class Input(_Model, frozen=True):
    path: str
    type: FileType
    name: str | None = None
    description: str | None = None
    url: str | None = None
    content: str | None = None
    streamable: bool | None = None


class Output(_Model, frozen=True):
    path: str
    url: str
    type: FileType
    name: str | None = None
    description: str | None = None
    path_prefix: str | None = None


class Resources(_Model, frozen=True):
    cpu_cores: int | None = None
    preemptible: bool | None = None
    ram_gb: float | None = None
    disk_gb: float | None = None
    zones: list[str] | None = None
    backend_parameters: dict[str, str] | None = None
    backend_parameters_strict: bool | None = None


class Executor(_Model, frozen=True):
    image: str
    command: list[str]
    workdir: str | None = None
    stdin: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    env: dict[str, str] | None = None
    ignore_error: bool | None = None


class ExecutorLog(_Model, frozen=True):
    exit_code: int
    start_time: str | None = None
    end_time: str | None = None
    stdout: str | None = None
    stderr: str | None = None


class OutputFileLog(_Model, frozen=True):
    url: str
    path: str
    size_bytes: str


class TaskLog(_Model, frozen=True):
    logs: list[ExecutorLog]
    outputs: list[OutputFileLog]
    metadata: dict[str, str] | None = None
    start_time: str | None = None
    end_time: str | None = None
    system_logs: list[str] | None = None


class Task(_Model, frozen=True):
    """A task as stored and as rendered in the FULL view."""

    id: str
    state: State
    executors: list[Executor]
    creation_time: str
    name: str | None = None
    description: str | None = None
    inputs: list[Input] | None = None
    outputs: list[Output] | None = None
    resources: Resources | None = None
    volumes: list[str] | None = None
    tags: dict[str, str] | None = None
    logs: list[TaskLog] | None = None
    owner: str | None = None
    """Who created the task, as the store knows it; never sent as a field of its own (the FULL
    view shows it in the task log's metadata, see `views`)."""


class TaskMinimal(_Model, frozen=True):
    id: str
    state: State


class CreateTaskResponse(_Model, frozen=True):
    id: str


class CancelTaskResponse(_Model, frozen=True):
    pass


class ListTasksResponse(_Model, frozen=True):
    # Declared as tesTask, as in the spec; in the MINIMAL view the items are TaskMinimal structs,
    # which encode to the {id, state} subset of it.
    tasks: list[Task]
    next_page_token: str | None = None


class ServiceType(_Model, frozen=True):
    group: str
    artifact: str
    version: str


class Organization(_Model, frozen=True):
    name: str
    url: str


class ServiceInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """tesServiceInfo: the GA4GH service-info fields (camelCase on the wire) plus the TES extras."""

    id: str
    name: str
    type: ServiceType
    organization: Organization
    version: str
    description: str | None = None
    contact_url: str | None = None
    documentation_url: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    environment: str | None = None
    storage: list[str] | None = None
    tes_resources_backend_parameters: list[str] | None = msgspec.field(
        default=None, name="tesResources_backend_parameters"
    )
    backend_parameters: dict[str, Parameter] | None = msgspec.field(
        default=None, name="poiesis_backend_parameters"
    )
    """What each mapped `backend_parameters` key becomes on this cluster (a Poiesis extension)."""
