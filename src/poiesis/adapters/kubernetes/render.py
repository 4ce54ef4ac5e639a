"""The TaskPod as Kubernetes objects (plain manifests, so the apiserver is the only judge): the Job
and its Pod (their shape is `taskpod`'s), a ConfigMap with the task (what the filers need, no
credentials) and a ServiceAccount for trec, both owned by the Job, and the task volume: a generic
ephemeral volume whose claim lives and dies with the Pod, or an emptyDir on the node's disk."""

from __future__ import annotations

import math
import posixpath
from typing import Any, Literal

import msgspec

from poiesis.adapters.kubernetes.security import (
    DEFAULT_CAPABILITIES,
    check_capabilities,
    executor_context,
    pod_context,
    poiesis_context,
)
from poiesis.adapters.kubernetes.shared import (
    SharedVolume,
    executor_mounts,
    filer_mounts,
    pod_volume,
    used,
)
from poiesis.adapters.kubernetes.shared import problems as shared_problems
from poiesis.adapters.kubernetes.taskpod import (
    BIN_DIR,
    DONE,
    FAILED_MARK,
    OUTPUTS_REPORT,
    RECORDED_MARK,
    SETUP,
    STAGE_IN,
    STAGE_OUT,
    STATUS_DIR,
    TASK_DIR,
    TASK_LABEL,
    TOKEN_DIR,
    TREC,
    VOLUME_ROOT,
    executor_container,
    executor_status,
    job_name,
)
from poiesis.domain.areas import Area
from poiesis.domain.parameters import Parameter, Placement, lower_keys, mapping_problems, placement
from poiesis.domain.staging import mount_dirs
from poiesis.domain.tes import Executor, Task


class PodSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    namespace: str = "default"
    image: str = "ghcr.io/poiesis-tes/poiesis:latest"
    """The poiesis image: trec, setup (it holds /usr/local/bin/poiesis-launcher), filers, done."""
    image_pull_policy: str = "IfNotPresent"
    """How the Poiesis image is pulled."""
    image_pull_secrets: list[str] = []
    """Secrets (in the task namespace, type kubernetes.io/dockerconfigjson) every task Pod pulls
    its images with: the Poiesis image's and the executors' registries."""
    owner_image_pull_secrets: dict[str, list[str]] = {}
    """More pull Secrets for the tasks of one owner (the principal as the API records it: `alice`
    with basic authentication alone, `basic#alice` beside OIDC, an OIDC principal claim's value),
    so only that owner's tasks can pull that registry's images."""
    executor_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    """How executors' images are pulled; unset, Kubernetes' default (IfNotPresent, Always for
    `:latest`). `Always` makes the node ask the registry, with the task's own Secrets, on every
    task: otherwise an image a node once pulled for an owner with a Secret runs for anyone."""
    ttl_seconds_after_finished: int = 3600
    default_disk_gb: float = 10.0
    storage_class: str | None = None
    task_volume: Literal["claim", "empty-dir"] = "claim"
    """`claim`: a generic ephemeral volume (a PersistentVolumeClaim of `disk_gb` in `storage_class`,
    made and deleted with the Pod). `empty-dir`: the node's own disk, an emptyDir limited to
    `disk_gb` and requested as ephemeral-storage, so the scheduler places it; no claim to provision."""
    limits: bool = True
    """Set limits equal to the requests (Guaranteed QoS) besides the requests."""
    database_secret: str = "poiesis-database"
    """Secret with key `url`: the database URL, mounted into trec alone."""
    storage_secret: str | None = None
    """Secret with key `endpoints.toml` for the filers (storage credentials)."""
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    node_selector: dict[str, str] = {}
    preemptible_node_selector: dict[str, str] = {}
    """Added when a task says `preemptible: true`."""
    tolerations: list[dict[str, Any]] = []
    preemptible_tolerations: list[dict[str, Any]] = []
    priority_class: str | None = None
    runtime_class: str | None = None
    kueue_queue: str | None = None
    """Kueue LocalQueue: the Job is created suspended with the queue-name label, Kueue admits it."""
    owner_kueue_queues: dict[str, str] = {}
    """The LocalQueue of each owner's tasks instead of `kueue_queue` (a queue per group or user,
    so that its ClusterQueue's quota applies to them); needs `kueue_queue` for everyone else."""
    zone_label: str = "topology.kubernetes.io/zone"
    tail_bytes: int = 64 * 1024
    filer_env: dict[str, str] = {}
    api_server: str | None = None
    """The apiserver URL trec uses instead of the in-cluster Service (clusters without kube-proxy)."""
    host_network: bool = False
    """Run task Pods on the node's network. Only for clusters where Pods cannot otherwise reach the
    apiserver and the database (the TaskPod tests use it: their PostgreSQL listens on the test
    node's loopback); executors then share the node's network, a risk on any shared cluster."""
    executor_security: Literal["default", "restricted"] = "default"
    """`default`: executors run as their images' users with no privilege escalation, RuntimeDefault
    seccomp and only `executor_capabilities` (task Pods pass the `baseline` Pod Security level).
    `restricted`: every container non-root with no capabilities (the `restricted` level); an image
    whose user is root is refused when its Pod starts."""
    executor_capabilities: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_CAPABILITIES))
    """`default` mode: the capabilities executors keep (all others are dropped)."""
    executor_user: int | None = None
    """The uid every executor runs as; unset, each image's own user (in `restricted` mode it must
    be non-root)."""
    executor_group: int | None = None
    """The primary gid of every executor; unset, the image's."""
    fs_group: int = 10001
    """The group the task volume belongs to; every container of the task Pod is in it."""
    poiesis_user: int = 10001
    """The uid (and gid) of Poiesis's own containers: the poiesis image's user."""
    user_namespaces: bool = False
    """Run task Pods in user namespaces of their own (`hostUsers: false`): root in an executor is
    not root on the node. Needs a cluster that supports them (Kubernetes 1.33 with containerd 2 or
    CRI-O on idmapped mounts); elsewhere the Pod cannot start and the task ends SYSTEM_ERROR."""
    backend_parameters: dict[str, Parameter] = {}
    """`resources.backend_parameters` keys this cluster honours and what each becomes on the Pod: an
    extended resource with a count (GPUs), a node label, a PriorityClass or a Kueue queue, each
    among values the operator allows (`poiesis.domain.parameters`)."""
    shared_volumes: list[SharedVolume] = []
    """Existing claims and NFS exports that `file://` URLs and plain paths under their `path` name,
    mounted into the tasks that use them (`adapters.kubernetes.shared`)."""

    def __post_init__(self) -> None:
        check_capabilities(self.executor_capabilities)
        if self.executor_security == "restricted" and self.executor_user == 0:
            raise ValueError("executor_user: 0 is root, which executor_security = restricted forbids")
        for name in ("executor_user", "executor_group", "fs_group", "poiesis_user"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 2**31:
                raise ValueError(f"{name}: {value} is not a user or group id")
        if self.poiesis_user == 0:
            raise ValueError("poiesis_user: Poiesis's own containers never run as root")
        problems = mapping_problems(self.backend_parameters) + shared_problems(self.shared_volumes)
        lower_keys(self.backend_parameters)
        for key, parameter in self.backend_parameters.items():
            if parameter.to == "node_label" and parameter.name in self.node_selector:
                problems.append(f"backend_parameters.{key}: node_selector already sets {parameter.name}")
            if parameter.to == "kueue_queue" and not self.kueue_queue:
                problems.append(
                    f"backend_parameters.{key}: a task's Kueue queue needs kueue_queue (the default queue)"
                )
        if self.restricted and any(v.nfs for v in self.shared_volumes):
            problems.append(
                "shared_volumes: an nfs volume is not allowed at the restricted Pod Security level "
                "(executor_security = restricted); use a claim bound to an NFS PersistentVolume"
            )
        if self.owner_kueue_queues and not self.kueue_queue:
            problems.append("owner_kueue_queues: needs kueue_queue, the queue of everyone else's tasks")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def restricted(self) -> bool:
        return self.executor_security == "restricted"

    @property
    def areas(self) -> tuple[Area, ...]:
        """Where `file://` URLs and plain paths may point: the shared volumes."""
        return tuple(v.area() for v in self.shared_volumes)

    @property
    def parameters(self) -> dict[str, Parameter]:
        """The mapping by lower-cased key."""
        return lower_keys(self.backend_parameters)


def sub_path(directory: str) -> str:
    """Where a TES directory lives on the task volume (the volume holds `/a/b` at `a/b`)."""
    return directory.strip("/")


def _quantity_bytes(gb: float) -> str:
    return str(math.ceil(gb * 1e9))


def _resources(task: Task, settings: PodSettings, placed: Placement) -> dict[str, Any]:
    requests: dict[str, str] = {}
    r = task.resources
    if r and r.cpu_cores:
        requests["cpu"] = str(r.cpu_cores)
    if r and r.ram_gb:
        requests["memory"] = _quantity_bytes(r.ram_gb)
    # Extended resources (GPUs) are whole and not overcommitted: the limit is the request.
    extended = {name: str(count) for name, count in placed.resources.items()}
    if not requests and not extended:
        return {}
    if settings.limits:
        return {"requests": requests | extended, "limits": requests | extended}
    return {"requests": requests | extended, **({"limits": extended} if extended else {})}


def _launcher(executor: Executor, index: int, deliver_after_failure: bool) -> list[str]:
    args = [f"{BIN_DIR}/launcher", "--status", executor_status(index)]
    if deliver_after_failure:
        args += ["--failed-mark", FAILED_MARK]
    for flag, value in (
        ("--stdin", executor.stdin),
        ("--stdout", executor.stdout),
        ("--stderr", executor.stderr),
    ):
        if value:
            args += [flag, value]
    if executor.ignore_error:
        args.append("--ignore-error")
    return [*args, "--", *executor.command]


def _in_place(shared: list[SharedVolume]) -> list[str]:
    """The directories the executors see from a shared volume rather than the task volume."""
    return [v.path for v in shared if v.mode == "mount"]


def _data_mounts(task: Task, shared: list[SharedVolume]) -> list[dict[str, Any]]:
    dirs = mount_dirs(task, _in_place(shared))
    return [{"name": "task-volume", "mountPath": d, "subPath": sub_path(d)} for d in dirs]


def _redirect_dirs(task: Task, shared: list[SharedVolume]) -> list[str]:
    """Directories of redirections that are not on a task directory: they get an emptyDir each."""
    covered = mount_dirs(task, _in_place(shared)) + _in_place(shared)
    extra: set[str] = set()
    for e in task.executors:
        for path in (e.stdout, e.stderr):
            if path and not any(path.startswith(d + "/") for d in covered):
                extra.add(posixpath.dirname(path))
    return sorted(extra)


def _poiesis(name: str, settings: PodSettings, command: list[str], **extra: Any) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": command,
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": poiesis_context(settings.poiesis_user),
    }
    container.update(extra)
    return container


def _filer(
    name: str, direction: str, task: Task, settings: PodSettings, shared: list[SharedVolume]
) -> dict[str, Any]:
    command = [
        "poiesis",
        "filer",
        direction,
        "--task",
        f"{TASK_DIR}/task.json",
        "--root",
        VOLUME_ROOT,
        "--termination-log",
        "/dev/termination-log",
    ]
    mounts = [
        {"name": "task", "mountPath": TASK_DIR, "readOnly": True},
        {"name": "task-volume", "mountPath": VOLUME_ROOT},
    ]
    if direction == "stage-out":
        # After an executor failed, the outputs that exist are uploaded and missing ones skipped.
        command += ["--report", VOLUME_ROOT + OUTPUTS_REPORT, "--after-failure-mark", FAILED_MARK]
        mounts.append({"name": "status", "mountPath": STATUS_DIR, "readOnly": True})
    mounts += filer_mounts(shared, writes=direction == "stage-out")
    env = [{"name": k, "value": v} for k, v in sorted(settings.filer_env.items())]
    # The filers open file:// URLs and plain paths on the shared volumes this task uses, no others.
    env.append({"name": "POIESIS_FILE_ROOTS", "value": ",".join(v.path for v in shared)})
    if settings.storage_secret:
        mounts.append({"name": "storage", "mountPath": "/tes/storage", "readOnly": True})
        env.append({"name": "POIESIS_STORAGE_ENDPOINTS_FILE", "value": "/tes/storage/endpoints.toml"})
    return _poiesis(name, settings, command, volumeMounts=mounts, env=env)


def _scheduling(task: Task, settings: PodSettings, placed: Placement) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    preemptible = bool(task.resources and task.resources.preemptible)
    selector = dict(settings.node_selector) | placed.node_labels
    tolerations = list(settings.tolerations)
    if preemptible:
        selector |= settings.preemptible_node_selector
        tolerations += settings.preemptible_tolerations
    if selector:
        spec["nodeSelector"] = selector
    if tolerations:
        spec["tolerations"] = tolerations
    zones = task.resources.zones if task.resources else None
    if zones:
        term = {"matchExpressions": [{"key": settings.zone_label, "operator": "In", "values": list(zones)}]}
        spec["affinity"] = {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}
        }
    if placed.priority_class or settings.priority_class:
        spec["priorityClassName"] = placed.priority_class or settings.priority_class
    if settings.runtime_class:
        spec["runtimeClassName"] = settings.runtime_class
    if settings.host_network:
        spec["hostNetwork"] = True
    return spec


def _trec(task: Task, settings: PodSettings) -> dict[str, Any]:
    return _poiesis(
        TREC,
        settings,
        ["poiesis", "trec"],
        restartPolicy="Always",
        env=[
            {"name": "POIESIS_TASK_ID", "value": task.id},
            {"name": "POIESIS_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POIESIS_POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "POIESIS_EXECUTOR_LOG_TAIL_BYTES", "value": str(settings.tail_bytes)},
            {
                "name": "POIESIS_DATABASE_URL",
                "valueFrom": {"secretKeyRef": {"name": settings.database_secret, "key": "url"}},
            },
            *(
                [{"name": "POIESIS_TREC_API_SERVER", "value": settings.api_server}]
                if settings.api_server
                else []
            ),
        ],
        volumeMounts=[
            {"name": "trec-token", "mountPath": TOKEN_DIR, "readOnly": True},
            {"name": "task-volume", "mountPath": VOLUME_ROOT, "readOnly": True},
            {"name": "status", "mountPath": STATUS_DIR},
        ],
    )


def _setup(settings: PodSettings) -> dict[str, Any]:
    return _poiesis(
        SETUP,
        settings,
        ["cp", "/usr/local/bin/poiesis-launcher", f"{BIN_DIR}/launcher"],
        volumeMounts=[{"name": "bin", "mountPath": BIN_DIR}],
    )


def _executor(
    task: Task,
    index: int,
    executor: Executor,
    resources: dict[str, Any],
    redirects: list[str],
    settings: PodSettings,
    shared: list[SharedVolume],
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": executor_container(index),
        "image": executor.image,
        "command": _launcher(executor, index, bool(task.outputs)),
        "securityContext": executor_context(
            restricted=settings.restricted,
            capabilities=settings.executor_capabilities,
            user=settings.executor_user,
            group=settings.executor_group,
        ),
        "volumeMounts": [
            {"name": "bin", "mountPath": BIN_DIR, "readOnly": True},
            {"name": "status", "mountPath": STATUS_DIR},
            *_data_mounts(task, shared),
            *executor_mounts(shared),
            *({"name": f"redirect-{n}", "mountPath": d} for n, d in enumerate(redirects)),
        ],
        "terminationMessagePolicy": "File",
    }
    if settings.executor_image_pull_policy:
        container["imagePullPolicy"] = settings.executor_image_pull_policy
    if executor.workdir:
        container["workingDir"] = executor.workdir
    if executor.env:
        container["env"] = [{"name": k, "value": v} for k, v in executor.env.items()]
    if resources:
        container["resources"] = resources
    return container


def _done(settings: PodSettings) -> dict[str, Any]:
    return _poiesis(
        DONE,
        settings,
        ["poiesis", "wait-file", RECORDED_MARK, "--timeout", "120"],
        volumeMounts=[{"name": "status", "mountPath": STATUS_DIR, "readOnly": True}],
    )


def _disk_gb(task: Task, settings: PodSettings) -> float:
    return (task.resources.disk_gb if task.resources else None) or settings.default_disk_gb


def _task_volume(task: Task, settings: PodSettings) -> dict[str, Any]:
    size = _quantity_bytes(_disk_gb(task, settings))
    if settings.task_volume == "empty-dir":
        return {"name": "task-volume", "emptyDir": {"sizeLimit": size}}
    claim: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    if settings.storage_class:
        claim["storageClassName"] = settings.storage_class
    return {
        "name": "task-volume",
        "ephemeral": {"volumeClaimTemplate": {"metadata": {"labels": {TASK_LABEL: task.id}}, "spec": claim}},
    }


def _volumes(
    task: Task, settings: PodSettings, redirects: list[str], shared: list[SharedVolume]
) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [
        _task_volume(task, settings),
        {"name": "task", "configMap": {"name": job_name(task.id)}},
        {"name": "bin", "emptyDir": {"sizeLimit": "64Mi"}},
        {"name": "status", "emptyDir": {"sizeLimit": "64Mi"}},
        {
            "name": "trec-token",
            "projected": {
                "sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                    {
                        "configMap": {
                            "name": "kube-root-ca.crt",
                            "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        }
                    },
                    {
                        "downwardAPI": {
                            "items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]
                        }
                    },
                ]
            },
        },
        *({"name": f"redirect-{n}", "emptyDir": {}} for n in range(len(redirects))),
        *(pod_volume(v) for v in shared),
    ]
    if settings.storage_secret:
        volumes.append({"name": "storage", "secret": {"secretName": settings.storage_secret}})
    return volumes


def _pull_secrets(task: Task, settings: PodSettings) -> dict[str, Any]:
    own = settings.owner_image_pull_secrets.get(task.owner or "", []) if task.owner else []
    names = list(dict.fromkeys([*settings.image_pull_secrets, *own]))
    return {"imagePullSecrets": [{"name": n} for n in names]} if names else {}


def _placement(task: Task, settings: PodSettings) -> Placement:
    given = task.resources.backend_parameters if task.resources else None
    return placement(given, settings.parameters) if given and settings.backend_parameters else Placement()


def render_pod_spec(task: Task, settings: PodSettings) -> dict[str, Any]:
    shared = used(task, settings.shared_volumes)
    redirects = _redirect_dirs(task, shared)
    placed = _placement(task, settings)
    resources = _resources(task, settings, placed)
    init: list[dict[str, Any]] = [_trec(task, settings), _setup(settings)]
    if task.inputs:
        init.append(_filer(STAGE_IN, "stage-in", task, settings, shared))
    init += [
        _executor(task, i, e, resources, redirects, settings, shared) for i, e in enumerate(task.executors)
    ]
    if task.outputs:
        init.append(_filer(STAGE_OUT, "stage-out", task, settings, shared))
    done = _done(settings)
    if settings.task_volume == "empty-dir":
        # The scheduler places the Pod where the node's disk has room for the task volume.
        done["resources"]["requests"]["ephemeral-storage"] = _quantity_bytes(_disk_gb(task, settings))
    return {
        "serviceAccountName": job_name(task.id),
        "automountServiceAccountToken": False,
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        "securityContext": pod_context(restricted=settings.restricted, fs_group=settings.fs_group),
        **({"hostUsers": False} if settings.user_namespaces else {}),
        "initContainers": init,
        "containers": [done],
        "volumes": _volumes(task, settings, redirects, shared),
        **_pull_secrets(task, settings),
        **_scheduling(task, settings, placed),
    }


def _metadata(task: Task, settings: PodSettings, name: str) -> dict[str, Any]:
    labels = dict(settings.labels) | {TASK_LABEL: task.id, "app.kubernetes.io/managed-by": "poiesis"}
    meta: dict[str, Any] = {"name": name, "namespace": settings.namespace, "labels": labels}
    if settings.annotations:
        meta["annotations"] = dict(settings.annotations)
    return meta


def render_job(task: Task, settings: PodSettings) -> dict[str, Any]:
    name = job_name(task.id)
    meta = _metadata(task, settings, name)
    own = settings.owner_kueue_queues.get(task.owner or "") if task.owner else None
    queue = _placement(task, settings).kueue_queue or own or settings.kueue_queue
    if queue:
        meta["labels"]["kueue.x-k8s.io/queue-name"] = queue
    template_meta = {
        k: v for k, v in _metadata(task, settings, name).items() if k in ("labels", "annotations")
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": settings.ttl_seconds_after_finished,
            "suspend": True,  # released once the objects it needs exist (or by Kueue)
            "template": {"metadata": template_meta, "spec": render_pod_spec(task, settings)},
        },
    }


def _owned(job: dict[str, Any]) -> list[dict[str, Any]]:
    meta = job["metadata"]
    return [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": False,
        }
    ]


def render_config_map(task: Task, settings: PodSettings, job: dict[str, Any]) -> dict[str, Any]:
    meta = _metadata(task, settings, job_name(task.id)) | {"ownerReferences": _owned(job)}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        # What the Pod's containers need: the task, not who sent it.
        "data": {"task.json": msgspec.json.encode(msgspec.structs.replace(task, owner=None)).decode()},
    }


def render_service_account(task: Task, settings: PodSettings, job: dict[str, Any]) -> dict[str, Any]:
    meta = _metadata(task, settings, job_name(task.id)) | {"ownerReferences": _owned(job)}
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": meta,
        "automountServiceAccountToken": False,
    }


def render_grant(
    task_id: str, pod_name: str, settings: PodSettings, job: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Role and RoleBinding that let the task's trec read its own Pod and that Pod's log, and
    nothing else. They name the Pod, so they are made once the Job controller has created it."""
    name = job_name(task_id)
    meta = {
        "name": name,
        "namespace": settings.namespace,
        "labels": {TASK_LABEL: task_id, "app.kubernetes.io/managed-by": "poiesis"},
        "ownerReferences": _owned(job),
    }
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": meta,
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["pods"],
                "resourceNames": [pod_name],
                "verbs": ["get", "watch", "list"],
            },
            {"apiGroups": [""], "resources": ["pods/log"], "resourceNames": [pod_name], "verbs": ["get"]},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": settings.namespace}],
    }
    return role, binding
