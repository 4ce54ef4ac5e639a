"""KubernetesCluster: a task becomes its TaskPod (see `render`).

`submit` is idempotent (deterministic names; 409 Conflict means it is already there):

1. the Job, suspended, so that its Pod cannot be created before what it needs exists;
2. the ConfigMap with the task and trec's ServiceAccount, both owned by the Job (garbage collected
   with it, by Kubernetes);
3. the Job released (`suspend: false`), unless Kueue is configured, which releases it on admission.

With caps on the tasks in flight (`held`), `submit` makes nothing: the task stays QUEUED in the
database until tctl's releaser calls `release`, which makes the same objects.

Once the Job controller has created the Pod, `grant` gives the task's ServiceAccount read access to
that one Pod and its log (a Role naming it). `watch_grants` does this for every task Pod in the
namespace; it runs in the API process and is idempotent, so any number of replicas may run it.

`cancel` deletes the Job and its Pods (with a short grace period) and reports True once no Pod of
the task is left. Errors that may pass (the apiserver unreachable, 5xx, 429) raise
`ClusterUnavailable`; the task stays where it is and is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import msgspec
import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from poiesis.adapters.kubernetes.render import (
    PodSettings,
    render_config_map,
    render_grant,
    render_job,
    render_service_account,
)
from poiesis.adapters.kubernetes.taskpod import TASK_LABEL, job_name
from poiesis.domain.tes import Task
from poiesis.ports.cluster import ClusterRefused, ClusterUnavailable

log = logging.getLogger("poiesis.kubernetes")
T = TypeVar("T")

METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1, application/json"
"""A list of the objects' metadata only, or (from a server that cannot) the whole objects."""
METADATA_ONE = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1, application/json"
"""The same for the objects of a watch."""
GRANT_WATCH_SECONDS = 60
"""How long one watch of the task Pods for grants runs before the next goes on from its version."""


class Owner(msgspec.Struct, rename="camel"):
    kind: str = ""
    name: str = ""
    uid: str = ""
    controller: bool | None = None


class ObjectMeta(msgspec.Struct, rename="camel"):
    """What is read of an object's metadata; the rest (its managed fields above all, which mirror
    its whole spec) is skipped, not decoded."""

    name: str = ""
    resource_version: str = ""
    labels: dict[str, str] = {}
    owner_references: list[Owner] | None = None


class _Meta(msgspec.Struct):
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    code: int | None = None
    """Set on a watch's ERROR event (a Status)."""


class _PageMeta(msgspec.Struct, rename="camel"):
    resource_version: str = ""
    continue_: str | None = msgspec.field(default=None, name="continue")


class _MetadataPage(msgspec.Struct):
    items: list[_Meta] | None = None
    metadata: _PageMeta = msgspec.field(default_factory=_PageMeta)


class _PodEvent(msgspec.Struct):
    type: str = ""
    object: _Meta = msgspec.field(default_factory=_Meta)


_METADATA_PAGE = msgspec.json.Decoder(_MetadataPage)


def metadata_pages(list_objects: Callable[..., Any], namespace: str) -> Iterator[_MetadataPage]:
    """The pages of a metadata-only list of the task objects (those labelled with a task),
    decoded as far as `ObjectMeta`; `list_objects` is the client's list call of their kind."""
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {
            "label_selector": TASK_LABEL,
            "limit": 500,
            "_preload_content": False,
            "_headers": {"Accept": METADATA_LIST},
        }
        if token:
            kwargs["_continue"] = token
        page = _METADATA_PAGE.decode(list_objects(namespace, **kwargs).data)
        yield page
        token = page.metadata.continue_
        if not token:
            return


@contextlib.contextmanager
def pod_watch(
    core: client.CoreV1Api, namespace: str, version: str, *, seconds: int, accept: str | None = None
) -> Iterator[Iterator[Any]]:
    """The lines of a watch of the task Pods from `version` (bookmarks asked for) for at most
    `seconds`, its connection released when done; `accept`: the representation (Accept header)."""
    kwargs: dict[str, Any] = {
        "label_selector": TASK_LABEL,
        "watch": True,
        "resource_version": version,
        "allow_watch_bookmarks": True,
        "timeout_seconds": seconds,
        "_preload_content": False,
    }
    if accept:
        kwargs["_headers"] = {"Accept": accept}
    response: Any = core.list_namespaced_pod(namespace, **kwargs)
    try:
        yield watch.watch.iter_resp_lines(response)
    finally:
        response.release_conn()


_POD_EVENT = msgspec.json.Decoder(_PodEvent)


KUBE_CALLS = 16
"""Kubernetes API calls under way at once from one process (threads, and pooled connections)."""

# The client blocks; its calls get threads of their own rather than asyncio's default executor
# (cores + 4 threads, shared with every other blocking call): a burst of submits is paced by the
# apiserver, not by a handful of threads.
_CALLS = ThreadPoolExecutor(max_workers=KUBE_CALLS, thread_name_prefix="kube")


def api_client(kubeconfig: str | None) -> client.ApiClient:
    """A client from a kubeconfig file, or from the service account mounted in this container,
    keeping a connection for each call that may be under way at once."""
    configuration = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = KUBE_CALLS
    api: client.ApiClient = client.ApiClient(configuration)
    return api


def _message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except ValueError:
        return str(exc.reason)


def _transient(exc: Exception) -> bool:
    if isinstance(exc, ApiException):
        return exc.status in (0, 429) or exc.status >= 500
    return isinstance(exc, urllib3.exceptions.HTTPError | OSError)


async def kube_call(action: Callable[[], T]) -> T:
    """Run a blocking Kubernetes client call in a thread: the one place its errors become the
    Cluster port's (transient ones ClusterUnavailable, other refusals ClusterRefused)."""
    try:
        return await asyncio.get_running_loop().run_in_executor(_CALLS, action)
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
        if _transient(exc):
            raise ClusterUnavailable(f"Kubernetes API: {exc}") from exc
        if isinstance(exc, ApiException):
            raise ClusterRefused(
                f"Kubernetes refused the task's objects: {exc.status} {_message(exc)}"
            ) from exc
        raise


class KubernetesCluster:
    name = "kubernetes"

    def __init__(
        self,
        api: client.ApiClient,
        settings: PodSettings,
        *,
        cancel_grace_seconds: int = 5,
        held: bool = False,
    ) -> None:
        self._api = api
        # Typed as Any: the manifests are plain dicts, which the client accepts as bodies.
        self._core: Any = client.CoreV1Api(api)
        self._batch: Any = client.BatchV1Api(api)
        self._rbac: Any = client.RbacAuthorizationV1Api(api)
        self.settings = settings
        self._grace = cancel_grace_seconds
        self.held = held
        """Tasks wait in the database for tctl's releaser (caps on the tasks in flight)."""
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._granted: set[str] = set()
        """The task Pods granted (by name), while they exist."""
        self._grants_failed = False

    @property
    def namespace(self) -> str:
        return self.settings.namespace

    async def call(self, action: Callable[[], T]) -> T:
        return await kube_call(action)

    def _create(self, create: Callable[[], Any]) -> Any:
        """Create; an object that already exists is fine (None)."""
        try:
            return create()
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise

    # The Cluster port

    def _submit(self, task: Task) -> None:
        ns = self.namespace
        name = job_name(task.id)
        created = self._create(lambda: self._batch.create_namespaced_job(ns, render_job(task, self.settings)))
        job = self._api.sanitize_for_serialization(created) if created is not None else None
        if job is None:
            existing = self._batch.read_namespaced_job(name, ns)
            job = self._api.sanitize_for_serialization(existing)
            if not existing.spec.suspend:
                return  # released already: an earlier submit finished
        self._create(
            lambda: self._core.create_namespaced_config_map(ns, render_config_map(task, self.settings, job))
        )
        self._create(
            lambda: self._core.create_namespaced_service_account(
                ns, render_service_account(task, self.settings, job)
            )
        )
        if not self.settings.kueue_queue:
            self._batch.patch_namespaced_job(name, ns, {"spec": {"suspend": False}})

    async def submit(self, task: Task) -> None:
        if not self.held:
            await self.call(lambda: self._submit(task))

    async def release(self, task: Task) -> None:
        """Make the task's objects now, held or not."""
        await self.call(lambda: self._submit(task))

    def _cancel(self, task_id: str) -> bool:
        ns = self.namespace
        selector = f"{TASK_LABEL}={task_id}"
        try:
            self._batch.delete_namespaced_job(job_name(task_id), ns, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise
        pods = self._core.list_namespaced_pod(ns, label_selector=selector).items
        for pod in pods:
            if pod.metadata.deletion_timestamp is None:
                try:
                    self._core.delete_namespaced_pod(pod.metadata.name, ns, grace_period_seconds=self._grace)
                except ApiException as exc:
                    if exc.status != 404:
                        raise
        deadline = time.monotonic() + self._grace + 10
        while time.monotonic() < deadline:
            if not self._core.list_namespaced_pod(ns, label_selector=selector).items:
                return True
            time.sleep(0.2)
        return False

    async def cancel(self, task_id: str) -> bool:
        return await self.call(lambda: self._cancel(task_id))

    # trec's access to its own Pod

    def grant(self, pod: ObjectMeta) -> bool:
        """Let the Pod's trec read that Pod and its log. Idempotent; False for a Pod not of a Job."""
        task_id = pod.labels.get(TASK_LABEL)
        owner = next((o for o in pod.owner_references or () if o.kind == "Job" and o.controller), None)
        if not task_id or owner is None:
            return False
        job = {"metadata": {"name": owner.name, "uid": owner.uid}}
        role, binding = render_grant(task_id, pod.name, self.settings, job)
        ns = self.namespace
        self._create(lambda: self._rbac.create_namespaced_role(ns, role))
        self._create(lambda: self._rbac.create_namespaced_role_binding(ns, binding))
        return True

    def _grant_new(self, pod: ObjectMeta) -> None:
        if pod.name in self._granted:
            return
        try:
            self.grant(pod)
        except ApiException as exc:
            log.warning("granting trec its Pod %s failed: %s", pod.name, exc.reason)
            self._grants_failed = True
        else:
            self._granted.add(pod.name)

    def _grant_listed(self) -> str:
        """Grant every task Pod not granted yet; the list's resourceVersion, to watch from."""
        present: set[str] = set()
        version = ""
        for page in metadata_pages(self._core.list_namespaced_pod, self.namespace):
            for item in page.items or ():
                present.add(item.metadata.name)
                self._grant_new(item.metadata)
            version = page.metadata.resource_version
        self._granted &= present
        return version

    def _grant_watched(self, version: str) -> str | None:
        """Grant each task Pod added from `version` on; the version to go on from, or None to list
        again (the version expired, or a grant failed and is to be tried again)."""
        with pod_watch(
            self._core, self.namespace, version, seconds=GRANT_WATCH_SECONDS, accept=METADATA_ONE
        ) as lines:
            for line in lines:
                if self._stop.is_set():
                    return version
                event = _POD_EVENT.decode(line)
                if event.type == "ERROR":
                    return None if event.object.code == 410 else version
                version = event.object.metadata.resource_version or version
                if event.type == "ADDED":
                    self._grant_new(event.object.metadata)
                elif event.type == "DELETED":
                    self._granted.discard(event.object.metadata.name)
        if self._grants_failed:
            self._grants_failed = False
            return None
        return version

    def _watch_grants(self) -> None:
        """List the task Pods once, then follow what is added from the list's version on, across
        the watch's timeouts: a Pod is granted once, not again at every new watch (a watch begun
        with no version replays every Pod as added)."""
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._grant_listed()
                version = self._grant_watched(version)
            except (ApiException, urllib3.exceptions.HTTPError, OSError, msgspec.DecodeError) as exc:
                if self._stop.is_set():  # stop() closed the client under the watch
                    return
                log.warning("watching task Pods failed, listing again: %s", exc)
                version = None
                self._stop.wait(1)

    def start(self) -> None:
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch_grants, name="trec-grants", daemon=True)
            self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        self._api.close()
