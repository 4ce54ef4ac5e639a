"""Settings: defaults, then an optional TOML file (`POIESIS_CONFIG`), then `POIESIS_*` variables.

Every field below is one setting; its environment variable is `POIESIS_` + the upper-cased name
(lists are comma-separated). The README lists them all.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from poiesis.adapters.kubernetes.controller import ControllerSettings
from poiesis.adapters.kubernetes.render import PodSettings

PREFIX = "POIESIS_"


def _data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "poiesis"


def default_database_url() -> str:
    return f"sqlite:///{_data_dir() / 'poiesis.db'}"


class Settings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    database_url: str = msgspec.field(default_factory=default_database_url)
    """postgresql://user:pass@host/db or sqlite:///path; by default SQLite under XDG_DATA_HOME."""
    database_pool_size: int = 20
    migrate_on_start: bool = True
    """Apply pending migrations when the API starts (off: run `poiesis migrate`)."""
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    """API processes (`poiesis api`); embedded mode always runs one."""
    backend: Literal["none", "local", "kubernetes"] | None = None
    """Where tasks run: `kubernetes`, `local` (this machine; the default of `poiesis serve`) or
    `none` (tasks are stored and stay QUEUED; the default of `poiesis api`)."""
    kubeconfig: str | None = None
    """Kubernetes backend: a kubeconfig file; unset, the in-cluster service account."""
    kubernetes: PodSettings = PodSettings()
    """Kubernetes backend: how task Pods are made (a `[kubernetes]` table in the TOML file)."""
    tctl: ControllerSettings = ControllerSettings()
    """The Task Controller (`poiesis tctl`; a `[tctl]` table in the TOML file)."""
    local_runtime: Literal["auto", "docker", "podman", "bwrap"] = "auto"
    """How the local backend runs executors: `auto` uses Docker or Podman when its engine answers,
    otherwise the bubblewrap sandbox."""
    local_max_tasks: int = max(1, os.cpu_count() or 1)
    """Tasks the local backend runs at once; the rest wait QUEUED."""
    local_workspaces: str = msgspec.field(default_factory=lambda: str(_data_dir() / "workspaces"))
    """Where the local backend keeps each running task's volume."""
    keep_workspaces: bool = False
    """Keep a task's workspace after it ends (for debugging)."""
    executor_log_tail_bytes: int = 64 * 1024
    """How much of the end of each executor's stdout and stderr its log keeps."""
    cors_allow_origins: list[str] = []
    """Origins allowed to call the API from a browser; empty disables CORS."""
    max_body_bytes: int = 16 * 1024 * 1024
    max_content_bytes: int = 4 * 1024 * 1024
    """Largest inline `content` of one input."""
    backend_parameters: list[str] = []
    """`resources.backend_parameters` keys this deployment supports (case-insensitive)."""
    storage: list[str] = []
    """Storage locations advertised in service-info, e.g. s3://bucket/."""
    service_id: str = "org.poiesis.tes"
    service_name: str = "Poiesis"
    service_description: str = "GA4GH Task Execution Service for Kubernetes"
    organization_name: str = "Poiesis"
    organization_url: str = "https://github.com/poiesis-tes/poiesis"
    contact_url: str | None = None
    documentation_url: str | None = None
    environment: str | None = None
    storage_endpoints_file: str | None = None
    """TOML file giving storage endpoints their own credentials and options (see the README)."""
    file_roots: list[str] = []
    """Directories `file://` inputs and outputs may use; empty disables `file://`."""
    filer_parallel: int = 8
    """Transfers at once per task."""
    filer_retry_seconds: float = 10.0
    """How long transient storage errors are retried before a transfer fails."""
    filer_part_mib: int = 16
    """Part size of multipart uploads, and the download chunk size."""
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"


_LISTS = {f.name for f in msgspec.structs.fields(Settings) if getattr(f.type, "__origin__", None) is list}


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in Settings.__struct_fields__:
        raw = environ.get(PREFIX + name.upper())
        if raw is None:
            continue
        values[name] = [x.strip() for x in raw.split(",") if x.strip()] if name in _LISTS else raw
    return values


class SettingsError(Exception):
    pass


def load(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = env.get(PREFIX + "CONFIG")
    if path:
        try:
            values |= tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"{PREFIX}CONFIG={path}: {exc}") from exc
    values |= _from_env(env)
    values |= {k: v for k, v in overrides.items() if v is not None}
    try:
        return msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"invalid setting: {exc}") from exc
