"""Task Pods as the Kubernetes API returns them (the parts the controller reads), for tests."""

from __future__ import annotations

from typing import Any

T0 = "2026-01-02T03:04:05Z"
T1 = "2026-01-02T03:04:06Z"
T2 = "2026-01-02T03:04:07Z"


def terminated(name: str, code: int = 0, reason: str | None = None, message: str = "") -> dict[str, Any]:
    state = {
        "exitCode": code,
        "reason": reason or ("Completed" if code == 0 else "Error"),
        "startedAt": T1,
        "finishedAt": T2,
    }
    if message:
        state["message"] = message
    return {"name": name, "image": "img", "state": {"terminated": state}}


def running(name: str) -> dict[str, Any]:
    return {"name": name, "image": "img", "state": {"running": {"startedAt": T1}}}


def waiting(name: str, reason: str, message: str = "", image: str = "img") -> dict[str, Any]:
    return {"name": name, "image": image, "state": {"waiting": {"reason": reason, "message": message}}}


def pod(
    task_id: str,
    *init: dict[str, Any],
    phase: str = "Running",
    reason: str | None = None,
    message: str | None = None,
    conditions: list[dict[str, Any]] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "initContainerStatuses": list(init)}
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    if conditions:
        status["conditions"] = conditions
    meta: dict[str, Any] = {"name": f"tes-{task_id}-abcde", "labels": {"poiesis.io/task": task_id}}
    if deleting:
        meta["deletionTimestamp"] = T2
    return {"metadata": meta, "spec": {"nodeName": "node-0"}, "status": status}


def disruption(reason: str, message: str = "") -> dict[str, Any]:
    return {"type": "DisruptionTarget", "status": "True", "reason": reason, "message": message}


def unschedulable(message: str) -> dict[str, Any]:
    return {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}


def executor_running(pods: list[Any], index: int) -> bool:
    """Whether the first of a task's Pods (client models, as `list_namespaced_pod` returns them)
    shows executor `index` running."""
    return bool(pods) and any(
        s.name == f"executor-{index}" and s.state.running
        for s in pods[0].status.init_container_statuses or []
    )
