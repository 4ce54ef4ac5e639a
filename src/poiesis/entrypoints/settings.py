"""Settings: defaults, then an optional TOML file (`POIESIS_CONFIG`), then `POIESIS_*` variables.

Every field below is one setting; its environment variable is `POIESIS_` + the upper-cased name
(lists are comma-separated). The README lists them all.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from poiesis.adapters.auth.oidc import OidcIssuer, check_issuer
from poiesis.adapters.kubernetes.controller import ControllerSettings
from poiesis.adapters.kubernetes.render import PodSettings
from poiesis.domain.fairness import Caps
from poiesis.domain.hosts import is_loopback
from poiesis.domain.submission import Rules

PREFIX = "POIESIS_"
_DOOR = Rules()


def _data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "poiesis"


def default_workspaces() -> str:
    if os.geteuid() == 0:  # root's home is closed to the sandbox's unprivileged user
        return "/var/lib/poiesis/workspaces"
    return str(_data_dir() / "workspaces")


def default_users_file() -> str:
    return str(_data_dir() / "users")


def default_database_url() -> str:
    return f"sqlite:///{_data_dir() / 'poiesis.db'}"


class Settings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    database_url: str = msgspec.field(default_factory=default_database_url)
    """postgresql://user:pass@host/db or sqlite:///path; by default SQLite under XDG_DATA_HOME."""
    database_pool_size: int = 20
    """PostgreSQL connections an API process keeps at most in each of its pools (the hot statements'
    through asyncpg, half that for pages, and SQLAlchemy's for the rest), each opened when needed."""
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
    max_active_tasks_per_user: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Tasks one user may have in flight (past QUEUED) at once, on either backend; the rest are
    accepted and held QUEUED, then released in fair order across users (0: no cap)."""
    max_active_tasks: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Tasks in flight at once in all, released in the same fair order (0: no cap; the local
    backend also holds to `local_max_tasks`)."""
    create_rate_per_user: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    """Creates per second one user may sustain; past it (and its burst) CreateTask answers 429
    with Retry-After. 0: no limit. Counted in each API process."""
    create_burst_per_user: Annotated[int, msgspec.Meta(ge=1)] = 1000
    """Creates one user may make at once before `create_rate_per_user` paces them (a workflow
    engine's burst)."""
    local_workspaces: str = msgspec.field(default_factory=lambda: default_workspaces())
    """Where the local backend keeps each running task's volume. The sandbox's user must be able to
    pass through every directory above it (the default as root: /var/lib/poiesis/workspaces)."""
    local_sandbox_uid: int = 65534
    """The unprivileged host user (and group) a root server runs the sandbox as."""
    local_reconcile_seconds: float = 15.0
    """How often the local backend looks for tasks nothing is running (QUEUED, lost, CANCELING)."""
    local_max_processes: int = 4096
    """Processes (and threads) one executor may have at once (a fork bomb stops there)."""
    local_network: Literal["none", "host"] = "none"
    """`none`: a task has a network namespace of its own with only a loopback (no way to reach this
    server, the host's services or anything else); `host`: the host's network, which lets a task
    call the TES API and every service this machine reaches (a risk)."""
    keep_workspaces: bool = False
    """Keep a task's workspace after it ends (for debugging)."""
    executor_log_tail_bytes: int = 64 * 1024
    """How much of the end of each executor's stdout and stderr its log keeps."""
    auth: list[Literal["none", "basic", "oidc"]] = []
    """How callers prove who they are: `oidc` (bearer JWTs), `basic` (the users file), both, or
    `none`/empty (every caller is `anonymous` and sees every task)."""
    allow_anonymous: bool = False
    """Let the API run without authentication on an address other than loopback (a risk: anyone
    who reaches it sees and cancels every task, and runs code)."""
    oidc: list[OidcIssuer] = []
    """Trusted identity providers (`[[oidc]]` tables in the TOML file, or a JSON array in
    `POIESIS_OIDC`)."""
    oidc_leeway_seconds: float = 30.0
    """Clock skew tolerated on `exp` and `nbf`."""
    oidc_jwks_cache_seconds: float = 300.0
    """How long an issuer's keys are used before they are fetched again."""
    oidc_jwks_refresh_seconds: float = 30.0
    """The shortest time between two fetches of one issuer's keys (an unknown key id asks early)."""
    oidc_ca_file: str | None = None
    """A CA bundle for the identity providers' TLS certificates (default: the system's)."""
    basic_users_file: str = msgspec.field(default_factory=default_users_file)
    """The users file of basic authentication (written by `poiesis users add|remove`)."""
    basic_admins: list[str] = []
    """Basic users who see and cancel every task."""
    basic_cache_seconds: float = 60.0
    """How long a verified password is remembered (a changed users file forgets at once)."""
    allowed_hosts: list[str] = []
    """Host names accepted besides the loopback ones while the server listens on a loopback address
    (elsewhere any Host is accepted: a proxy or ingress in front decides)."""
    cors_allow_origins: list[str] = []
    """Origins allowed to call the API from a browser; empty disables CORS."""
    max_body_bytes: int = 16 * 1024 * 1024
    # The caps of the door (`domain.submission.Rules`), one setting each, with the rules' defaults.
    max_content_bytes: int = _DOOR.max_content_bytes
    """Largest inline `content` of one input."""
    max_executors: int = _DOOR.max_executors
    max_inputs: int = _DOOR.max_inputs
    max_outputs: int = _DOOR.max_outputs
    max_volumes: int = _DOOR.max_volumes
    max_tags: int = _DOOR.max_tags
    max_env: int = _DOOR.max_env
    """Environment variables of one executor."""
    max_cpu_cores: int = _DOOR.max_cpu_cores
    max_gb: float = _DOOR.max_gb
    """The largest `ram_gb` and `disk_gb` a task may ask for."""
    max_directories: int = _DOOR.max_directories
    """Separate directories a task's inputs, outputs and volumes may lie in (the mounts of its volume)."""
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
    """Embedded mode: directories `file://` URLs and plain paths may name; empty disables them (on
    Kubernetes, `kubernetes.shared_volumes` are those directories)."""
    filer_parallel: int = 8
    """Transfers at once per task."""
    filer_retry_seconds: float = 10.0
    """How long transient storage errors are retried before a transfer fails."""
    filer_part_mib: int = 16
    """Part size of multipart uploads, and the download chunk size."""
    ui: bool = True
    """Serve the web dashboard at `/ui`: the tasks each user may see through the API, with the same
    authentication; false leaves only the API."""
    metrics: bool = True
    """Serve Prometheus metrics at `/metrics` on the API's port, without authentication: counts and
    latencies only, never a task id, owner or URL."""
    metrics_cache_seconds: float = 5.0
    """The task counts in the metrics are read from the database at most this often."""
    otlp_traces_endpoint: str = ""
    """Send OpenTelemetry traces of the API's requests and database statements over OTLP/HTTP to
    this URL (e.g. `http://otel-collector:4318/v1/traces`); empty turns tracing off."""
    tracing_sample_ratio: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 1.0
    """The share of new traces recorded (a caller's sampled `traceparent` is always followed)."""
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"

    @property
    def caps(self) -> Caps:
        """The caps on tasks in flight (Kubernetes: tctl releases the tasks held by them)."""
        return Caps(per_owner=self.max_active_tasks_per_user or None, total=self.max_active_tasks or None)


_JSON = {"oidc"}
"""Settings whose environment variable holds JSON (lists of tables)."""
_LISTS = {
    f.name
    for f in msgspec.structs.fields(Settings)
    if getattr(f.type, "__origin__", None) is list and f.name not in _JSON
}


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in Settings.__struct_fields__:
        raw = environ.get(PREFIX + name.upper())
        if raw is None:
            continue
        if name in _JSON:
            try:
                values[name] = msgspec.json.decode(raw)
            except msgspec.DecodeError as exc:
                raise SettingsError(f"{PREFIX}{name.upper()} is not JSON: {exc}") from None
        elif name in _LISTS:
            values[name] = [x.strip() for x in raw.split(",") if x.strip()]
        else:
            values[name] = raw
    return values


class SettingsError(Exception):
    pass


def auth_problems(settings: Settings) -> list[str]:
    """Why the API must not start with these authentication settings (empty when it may)."""
    methods = set(settings.auth) - {"none"}
    problems: list[str] = []
    if "none" in settings.auth and methods:
        problems.append(f"auth: 'none' cannot be combined with {', '.join(sorted(methods))}")
    if "oidc" in methods:
        if not settings.oidc:
            problems.append("auth includes 'oidc' but no [[oidc]] issuer is configured")
        for issuer in settings.oidc:
            problems.extend(check_issuer(issuer))
    if not methods and not settings.allow_anonymous and not is_loopback(settings.host):
        problems.append(
            f"authentication is off and host {settings.host} is not a loopback address: anyone who "
            "reaches it could run code and read every task. Set auth (oidc, basic), or "
            "allow_anonymous = true to accept that risk"
        )
    return problems


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
        settings = msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"invalid setting: {exc}") from exc
    if settings.caps.any and settings.kubernetes.kueue_queue:
        raise SettingsError(
            "max_active_tasks_per_user and max_active_tasks cannot be combined with "
            "kubernetes.kueue_queue: Kueue releases the Jobs, and its queues' quotas are the caps"
        )
    if settings.backend == "kubernetes" and settings.file_roots:
        raise SettingsError(
            "file_roots: on Kubernetes, file:// URLs and plain paths name the operator's shared "
            "volumes (kubernetes.shared_volumes)"
        )
    return settings
