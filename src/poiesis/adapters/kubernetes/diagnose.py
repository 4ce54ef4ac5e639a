"""What Kubernetes says about a task whose recorder could not say it (pure: Pods and Jobs as dicts).

The Task Controller uses this when a Pod has ended, was deleted, or cannot start, and the database
still holds no terminal state. The state follows from the Pod's own status, never from a timer
guess. In this order, the first that applies:

| what Kubernetes shows                                                  | state          |
|------------------------------------------------------------------------|----------------|
| evicted (`Evicted`, node pressure, the Eviction API), preempted by the | PREEMPTED      |
| scheduler, or its node lost (deleted, tainted away): capacity the      |                |
| cluster took back; the executor it killed did not fail by itself       |                |
| an executor container `OOMKilled` (its exit code is kept)              | EXECUTOR_ERROR |
| a Poiesis container (trec, setup, the filers) `OOMKilled`              | SYSTEM_ERROR   |
| the Pod failed with a reason of its own (`DeadlineExceeded`, a node    | SYSTEM_ERROR   |
| shutdown, ...), whatever exit codes its killed containers show         |                |
| the steps decide it: an executor exited non-zero, the outputs were     | as the steps   |
| uploaded, a filer failed (its line)                                    |                |
| any other end, or the Pod deleted before the task finished             | SYSTEM_ERROR   |
| an image that cannot be pulled, no node that fits, a volume claim that | SYSTEM_ERROR   |
| never binds, for longer than the controller's start timeout            |                |
| at once: an image the registry says does not exist or may not be       | SYSTEM_ERROR   |
| pulled, an invalid image name, a root image under `restricted`         |                |

`reason` is a short machine-readable word (the Kubernetes reason where there is one); it goes to
the task log's `metadata` as `termination_reason`, and `line` to `system_logs`.
"""

from __future__ import annotations

import re
from typing import Any

from poiesis.adapters.kubernetes import observe
from poiesis.adapters.kubernetes.taskpod import executor_index
from poiesis.domain.states import State, is_terminal
from poiesis.domain.tes import Task
from poiesis.ports.taskobjects import JobSeen, PodSeen, Stuck, Verdict

# Conditions of type DisruptionTarget: the Pod is being removed by the cluster, not by its own end.
_TAKEN_BACK = {
    "PreemptionByScheduler": "preempted by a higher-priority Pod",
    "EvictionByEvictionAPI": "evicted through the Eviction API (e.g. a node drain)",
    "TerminationByKubelet": "evicted by the node (resource pressure or shutdown)",
    "DeletionByTaintManager": "removed from a node that became unavailable (taint)",
    "DeletionByPodGC": "the node it ran on was lost",
}

_CANNOT_START = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
}

_UNSCHEDULABLE = ("PodScheduled", "False", "Unschedulable")

_NEVER_STARTS = {"InvalidImageName", "ErrImageNeverPull"}
# What a registry (through containerd or CRI-O) answers for an image, repository or tag that does
# not exist, or that this node may not pull: an answer, not a failure to get one. Timeouts,
# refused connections and 5xx answers are not here: they may pass, so they wait the start timeout.
_PULL_REFUSED = re.compile(
    r": not found\b|code = NotFound|manifest unknown|name unknown|repository does not exist"
    r"|pull access denied|insufficient_scope|\b401 Unauthorized|\b403 Forbidden|: denied\b",
    re.IGNORECASE,
)
# The kubelet's refusal of an image whose user is root (or not numeric) under runAsNonRoot.
_ROOT_REFUSED = re.compile(r"runAsNonRoot and image (will run as root|has non-numeric user)")


def _final(reason: str, message: str) -> bool:
    if reason in _NEVER_STARTS:
        return True
    if reason in ("ErrImagePull", "ImagePullBackOff"):
        return bool(_PULL_REFUSED.search(message))
    return reason == "CreateContainerConfigError" and bool(_ROOT_REFUSED.search(message))


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("status") or {}


def phase(pod: dict[str, Any]) -> str:
    return str(_status(pod).get("phase") or "")


def has_ended(pod: dict[str, Any]) -> bool:
    return phase(pod) in ("Succeeded", "Failed")


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in _status(obj).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return None


def _all_statuses(pod: dict[str, Any]) -> list[dict[str, Any]]:
    status = _status(pod)
    return list(status.get("initContainerStatuses") or []) + list(status.get("containerStatuses") or [])


def _taken_back(pod: dict[str, Any]) -> Verdict | None:
    status = _status(pod)
    disruption = _condition(pod, "DisruptionTarget")
    if status.get("reason") == "Evicted" or disruption is not None:
        kind = (disruption or {}).get("reason") or "Evicted"
        why = _TAKEN_BACK.get(kind, "evicted")
        detail = status.get("message") or (disruption or {}).get("message") or ""
        line = f"the cluster took the task's Pod back: {why} ({kind})"
        return Verdict(State.PREEMPTED, kind, f"{line}: {detail}" if detail else line)
    return None


def _oom(task: Task, pod: dict[str, Any]) -> Verdict | None:
    for status in _all_statuses(pod):
        terminated = (status.get("state") or {}).get("terminated") or {}
        if terminated.get("reason") != "OOMKilled":
            continue
        name = str(status.get("name"))
        index = executor_index(name)
        if index is not None:
            ram = task.resources.ram_gb if task.resources else None
            limit = f" of {ram:g} GB" if ram else ""
            return Verdict(
                State.EXECUTOR_ERROR,
                "OOMKilled",
                f"executor {index} was killed for using more than its memory"
                f"{limit} (OOMKilled, exit code {terminated.get('exitCode')})",
            )
        return Verdict(
            State.SYSTEM_ERROR, "OOMKilled", f"the Poiesis container {name} ran out of memory (OOMKilled)"
        )
    return None


def _killed(pod: dict[str, Any]) -> Verdict | None:
    """The Pod failed for a reason of its own (its deadline, a node shutdown, ...): whatever exit
    codes the killed containers show, no executor failed by itself."""
    status = _status(pod)
    reason = status.get("reason")
    if phase(pod) != "Failed" or not reason:
        return None
    detail = status.get("message") or "no message"
    return Verdict(State.SYSTEM_ERROR, str(reason), f"the task's Pod failed ({reason}): {detail}")


def overriding(task: Task, pod: dict[str, Any]) -> Verdict | None:
    """A reason that decides the task's end over what its steps show: the cluster took the Pod
    back (an executor killed by an eviction did not fail), a container ran out of memory, or the
    Pod was failed with a reason of its own (e.g. `DeadlineExceeded`)."""
    return _taken_back(pod) or _oom(task, pod) or _killed(pod)


def ended(task: Task, pod: dict[str, Any], *, deleted: bool = False) -> Verdict | None:
    """The task's end as the Pod shows it: the Pod has ended, or it was deleted (`deleted`, this is
    its last known status). None while the Pod is still going."""
    if not (has_ended(pod) or deleted):
        return None
    found = overriding(task, pod)
    if found is not None:
        return found
    progress = observe.progress(task, pod)
    if is_terminal(progress.state):
        if progress.state is State.SYSTEM_ERROR and progress.system_logs:
            return Verdict(State.SYSTEM_ERROR, "Error", progress.system_logs[-1])
        line = "the recorder did not record the task's end (Kubernetes shows it)"
        if task.outputs and progress.state is State.COMPLETE:
            line += "; the output file logs are not known"
        reason = "Completed" if progress.state is State.COMPLETE else "Error"
        return Verdict(progress.state, reason, line)
    status = _status(pod)
    if deleted and not has_ended(pod):
        return Verdict(State.SYSTEM_ERROR, "Deleted", "the task's Pod was deleted before the task finished")
    reason = str(status.get("reason") or "Error")
    detail = status.get("message") or _failed_container(pod) or "no reason given"
    return Verdict(State.SYSTEM_ERROR, reason, f"the task's Pod failed ({reason}): {detail}")


def _failed_container(pod: dict[str, Any]) -> str | None:
    for status in _all_statuses(pod):
        terminated = (status.get("state") or {}).get("terminated") or {}
        if terminated and terminated.get("exitCode") not in (0, None):
            return (
                f"container {status.get('name')} exited with {terminated.get('exitCode')}"
                f" ({terminated.get('reason') or 'Error'})"
            )
    return None


def stuck(pod: dict[str, Any]) -> Stuck | None:
    """Why the Pod cannot start, if Kubernetes says so: an image that cannot be pulled, a container
    that cannot be created, or no node that fits (which includes a claim that never binds)."""
    if has_ended(pod) or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return None
    for status in _all_statuses(pod):
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _CANNOT_START:
            image = status.get("image") or ""
            message = waiting.get("message") or ""
            line = f"container {status.get('name')} cannot start ({waiting['reason']})"
            line += f": image {image}" if image else ""
            if _ROOT_REFUSED.search(message):
                line += " (executor_security = restricted runs no image as root)"
            return Stuck(
                str(waiting["reason"]),
                f"{line}: {message}" if message else line,
                final=_final(str(waiting["reason"]), message),
            )
    for cond in _status(pod).get("conditions") or []:
        if (cond.get("type"), cond.get("status"), cond.get("reason")) == _UNSCHEDULABLE:
            message = cond.get("message") or "no node fits the task"
            return Stuck("Unschedulable", f"the task's Pod cannot be scheduled: {message}")
    return None


def job_failed(job: dict[str, Any]) -> Verdict | None:
    """A Job that failed without a Pod to show why (e.g. its deadline passed before one started)."""
    failed = _condition(job, "Failed")
    if failed is None:
        return None
    reason = str(failed.get("reason") or "Failed")
    detail = failed.get("message") or ""
    line = f"the task's Job failed ({reason})" + (f": {detail}" if detail else "")
    return Verdict(State.SYSTEM_ERROR, reason, line)


def pod_seen(pod: dict[str, Any], deleted: bool) -> PodSeen:
    """The TaskObjects port's view of a task Pod."""
    return PodSeen(deleted=deleted, ended=has_ended(pod), stuck=None if deleted else stuck(pod))


def job_seen(job: dict[str, Any], *, admitted_elsewhere: bool) -> JobSeen:
    """The TaskObjects port's view of a task Job; `admitted_elsewhere`: an admission controller
    (Kueue) releases suspended Jobs, not Poiesis."""
    suspended = bool((job.get("spec") or {}).get("suspend"))
    return JobSeen(
        failed=job_failed(job),
        needs_release=suspended and not admitted_elsewhere,
        held=suspended and admitted_elsewhere,
    )


_WAITING = ("QuotaReserved", "Admitted")


def admission(workloads: list[dict[str, Any]], queue: str | None) -> str:
    """Why Kueue has not admitted a Job, from its Workloads (as the Kueue API gives them)."""
    if not workloads:
        return f"Kueue has made no Workload for the task's Job yet (queue {queue or 'unset'})"
    for kind in _WAITING:
        for cond in _status(workloads[0]).get("conditions") or []:
            if cond.get("type") == kind and cond.get("status") == "False" and cond.get("message"):
                return f"Kueue: {cond['message']}"
    return "Kueue has not admitted the task's Job yet"
