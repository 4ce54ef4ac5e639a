"""KubeTaskObjects: the TaskObjects port (the Task Controller's view of the cluster, in domain
terms) on Kubernetes: an informer on task Pods, and the Job reads and writes it needs. What a Pod or
a Job means for its task is `diagnose`'s and `observe`'s reading; the controller never sees either.

The informer lists the Pods labelled `poiesis.io/task` and then watches them from the list's
resourceVersion, as plain JSON (no client models: thousands of Pods must stay cheap). It keeps a
slim copy of each Pod (what `diagnose` reads), and a deleted Pod's last status until its task is
settled. It queues a task only when its Pod says something the controller acts on (ended, deleted,
cannot start); everything else is covered by the periodic resync.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from poiesis.adapters.clock import SystemClock
from poiesis.adapters.kubernetes import diagnose, observe
from poiesis.adapters.kubernetes.cluster import KubernetesCluster, kube_call, metadata_pages, pod_watch
from poiesis.adapters.kubernetes.taskpod import TASK_LABEL, job_name
from poiesis.domain import lifecycle
from poiesis.domain.tes import Task
from poiesis.ports.clock import Clock
from poiesis.ports.taskobjects import JobSeen, PodSeen, Verdict

log = logging.getLogger("poiesis.tctl.informer")

_CONTAINER_KEYS = ("name", "image", "state", "restartCount")


def slim(pod: dict[str, Any]) -> dict[str, Any]:
    """What the controller reads of a Pod: a few KB instead of tens."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    kept: dict[str, Any] = {
        key: status[key] for key in ("phase", "reason", "message", "conditions") if key in status
    }
    for key in ("initContainerStatuses", "containerStatuses"):
        if key in status:
            kept[key] = [{k: s[k] for k in _CONTAINER_KEYS if k in s} for s in status[key] or []]
    owner = next((o for o in meta.get("ownerReferences") or [] if o.get("kind") == "Job"), None)
    return {
        "metadata": {
            "name": meta.get("name"),
            "resourceVersion": meta.get("resourceVersion"),
            "deletionTimestamp": meta.get("deletionTimestamp"),
            "labels": {TASK_LABEL: (meta.get("labels") or {}).get(TASK_LABEL)},
            "jobUid": (owner or {}).get("uid"),
        },
        "spec": {"nodeName": (pod.get("spec") or {}).get("nodeName")},
        "status": kept,
    }


def worth_a_pass(pod: dict[str, Any], deleted: bool) -> bool:
    return deleted or diagnose.has_ended(pod) or diagnose.stuck(pod) is not None


class KubeTaskObjects:
    def __init__(
        self,
        cluster: KubernetesCluster,
        api: client.ApiClient,
        clock: Clock | None = None,
        *,
        admitted_elsewhere: bool = False,
    ) -> None:
        """`cluster` makes and removes the task's objects (the Cluster port); `admitted_elsewhere`:
        an admission controller (Kueue) releases suspended Jobs, not Poiesis."""
        self.cluster = cluster
        self._admitted_elsewhere = admitted_elsewhere
        self._clock = clock or SystemClock()
        self.namespace = cluster.namespace
        self._core: Any = client.CoreV1Api(api)
        self._batch: Any = client.BatchV1Api(api)
        self._custom: Any = client.CustomObjectsApi(api)
        self._pods: dict[str, tuple[dict[str, Any], bool]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.synced = threading.Event()
        """Set once the first full list is in the cache."""

    # The cache

    def _seen(self, task_id: str) -> tuple[dict[str, Any], bool] | None:
        """The task's Pod as last seen, and whether it was deleted."""
        with self._lock:
            return self._pods.get(task_id)

    def pod(self, task_id: str) -> PodSeen | None:
        seen = self._seen(task_id)
        return None if seen is None else diagnose.pod_seen(*seen)

    def end_of(self, task: Task) -> Verdict | None:
        seen = self._seen(task.id)
        return None if seen is None else diagnose.ended(task, seen[0], deleted=seen[1])

    def steps(self, task: Task) -> list[lifecycle.Event]:
        seen = self._seen(task.id)
        return [] if seen is None else observe.events(task, seen[0])

    def forget(self, task_id: str) -> None:
        with self._lock:
            seen = self._pods.get(task_id)
            if seen is not None and seen[1]:
                del self._pods[task_id]

    def task_ids(self) -> set[str]:
        with self._lock:
            return set(self._pods)

    def _put(self, pod: dict[str, Any], deleted: bool) -> str | None:
        task_id = ((pod.get("metadata") or {}).get("labels") or {}).get(TASK_LABEL)
        if not task_id:
            return None
        with self._lock:
            self._pods[task_id] = (pod, deleted)
        return str(task_id)

    # The informer

    def start(self, notify: Callable[[str], None]) -> None:
        """Fill the cache and keep it current in a thread; `notify(task_id)` when a Pod's change
        is worth a pass (called from that thread)."""
        self._thread = threading.Thread(target=self._run, args=(notify,), name="pod-informer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _list(self, notify: Callable[[str], None]) -> str:
        present: dict[str, dict[str, Any]] = {}
        token: str | None = None
        version = ""
        while True:
            kwargs: dict[str, Any] = {"label_selector": TASK_LABEL, "limit": 500, "_preload_content": False}
            if token:
                kwargs["_continue"] = token
            page = json.loads(self._core.list_namespaced_pod(self.namespace, **kwargs).data)
            for item in page.get("items") or []:
                pod = slim(item)
                task_id = pod["metadata"]["labels"][TASK_LABEL]
                if task_id:
                    present[task_id] = pod
            meta = page.get("metadata") or {}
            version = str(meta.get("resourceVersion") or version)
            token = meta.get("continue")
            if not token:
                break
        with self._lock:
            vanished = [tid for tid, (_, deleted) in self._pods.items() if tid not in present and not deleted]
            for tid in vanished:
                self._pods[tid] = (self._pods[tid][0], True)
            for tid, pod in present.items():
                self._pods[tid] = (pod, False)
        for tid in vanished:
            notify(tid)
        for tid, pod in present.items():
            if worth_a_pass(pod, False):
                notify(tid)
        self.synced.set()
        return version

    def _watch(self, version: str, notify: Callable[[str], None]) -> str | None:
        """Follow changes from `version`; the version to resume from, or None to list again."""
        with pod_watch(self._core, self.namespace, version, seconds=300) as lines:
            for line in lines:
                if self._stop.is_set():
                    return version
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    return None if obj.get("code") == 410 else version
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind == "BOOKMARK":
                    continue
                pod = slim(obj)
                deleted = kind == "DELETED"
                task_id = self._put(pod, deleted)
                if task_id and worth_a_pass(pod, deleted):
                    notify(task_id)
        return version

    def _run(self, notify: Callable[[str], None]) -> None:
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._list(notify)
                version = self._watch(version, notify)
            except (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
                log.warning("watching task Pods failed, listing again: %s", exc)
                version = None
                self._stop.wait(1)

    # Reads and writes

    def _job(self, task_id: str) -> dict[str, Any] | None:
        try:
            response = self._batch.read_namespaced_job(
                job_name(task_id), self.namespace, _preload_content=False
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        found: dict[str, Any] = json.loads(response.data)
        return found

    async def job(self, task_id: str) -> JobSeen | None:
        job = await kube_call(lambda: self._job(task_id))
        return None if job is None else diagnose.job_seen(job, admitted_elsewhere=self._admitted_elsewhere)

    def _admission(self, task_id: str) -> str:
        job = self._job(task_id)
        if job is None:
            return "the task's Job is gone"
        meta = job.get("metadata") or {}
        found = self._custom.list_namespaced_custom_object(
            "kueue.x-k8s.io",
            "v1beta2",
            self.namespace,
            "workloads",
            label_selector=f"kueue.x-k8s.io/job-uid={meta.get('uid')}",
        )
        queue = (meta.get("labels") or {}).get("kueue.x-k8s.io/queue-name")
        return diagnose.admission(list(found.get("items") or []), queue)

    async def admission(self, task_id: str) -> str:
        return await kube_call(lambda: self._admission(task_id))

    def _job_task_ids(self) -> set[str]:
        """The task ids of the task Jobs, from their metadata alone (the apiserver leaves out each
        Job's spec and status), of which only the labels are decoded: what remains of a Job's
        metadata is mostly its managed fields, which mirror its whole spec."""
        ids: set[str] = set()
        for page in metadata_pages(self._batch.list_namespaced_job, self.namespace):
            labels = (item.metadata.labels for item in page.items or ())
            ids.update(task_id for each in labels if (task_id := each.get(TASK_LABEL)))
        return ids

    async def known(self) -> set[str]:
        return self.task_ids() | await kube_call(self._job_task_ids)

    async def submit(self, task: Task) -> None:
        await self.cluster.submit(task)

    async def release(self, task: Task) -> None:
        await self.cluster.release(task)

    async def remove(self, task_id: str) -> bool:
        return await self.cluster.cancel(task_id)

    def _event(self, task_id: str, reason: str, message: str, warning: bool) -> None:
        seen = self._seen(task_id)
        uid = seen[0]["metadata"].get("jobUid") if seen else None
        now = self._clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
        involved: dict[str, Any] = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": job_name(task_id),
            "namespace": self.namespace,
        }
        if uid:
            involved["uid"] = uid
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{job_name(task_id)}.", "namespace": self.namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": "poiesis-tctl"},
            "reportingComponent": "poiesis-tctl",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self._core.create_namespaced_event(self.namespace, body)

    async def event(self, task_id: str, reason: str, message: str, *, warning: bool) -> None:
        try:
            await asyncio.to_thread(self._event, task_id, reason, message, warning)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            log.warning("recording an event for task %s failed: %s", task_id, exc)
