"""What a task Pod's containers may do: the securityContexts of the TaskPod.

An executor is a stranger's code on a shared cluster. Two modes, chosen by the operator
(`executor_security`):

- `default`: the executor runs as its image's user (often root), with no privilege escalation
  (`NoNewPrivs`: a setuid binary does not raise privileges), the runtime's default seccomp profile,
  and every capability dropped but the few that ordinary root images use (`executor_capabilities`,
  `DEFAULT_CAPABILITIES` below). Task Pods pass the `baseline` Pod Security level.
- `restricted`: task Pods pass the `restricted` level: every container non-root (the operator's
  `executor_user`, or each image's own non-root user, which the kubelet checks), every capability
  dropped. An image whose user is root cannot start; the kubelet says so at once and the Task
  Controller ends the task SYSTEM_ERROR with those words.

Poiesis's own containers (trec, setup, the filers, done) are `restricted` in both modes: the image's
non-root user, a read-only root filesystem, no capabilities, RuntimeDefault seccomp.

The task volume belongs to `fs_group` in both modes (the Pod's `fsGroup`), and the filers write it
group-writable, so an executor of any user in that group (every container of the Pod is) can write
what was staged, and `tof` can read what the executors wrote.
"""

from __future__ import annotations

import re
from typing import Any

DEFAULT_CAPABILITIES: tuple[str, ...] = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETGID", "SETUID")
"""What an ordinary root image needs, each measured on a real node
(tests/integration/realnode/test_security.py removes each one and shows what stops working):

- CHOWN: `chown` of a file (tar and cp -p restoring owners, entrypoints handing files to a user);
- DAC_OVERRIDE: root writing a file or directory another user owns (an image's own files under
  non-root owners, a volume another container made without group write);
- FOWNER: `chmod` or `touch -d` of a file another user owns (tar restoring modes and times);
- KILL: signalling a process of another user in the container (a tool that started a helper
  under an unprivileged user and must stop it);
- SETGID, SETUID: switching to another user (apt's sandbox user, `su`-less `setpriv`/`gosu`-style
  entrypoints, servers that drop root).

Left out of the runtime's defaults: MKNOD (device nodes: the host's disks), NET_RAW (raw sockets:
spoofing and ARP on the Pod network), NET_BIND_SERVICE (a task serves nothing), SYS_CHROOT,
SETPCAP, SETFCAP (file capabilities), FSETID, AUDIT_WRITE."""

_CAPABILITY = re.compile(r"^[A-Z][A-Z0-9_]*$")
RUNTIME_DEFAULT = {"type": "RuntimeDefault"}


def check_capabilities(names: list[str]) -> None:
    """Capability names as Kubernetes takes them (`CHOWN`, not `CAP_CHOWN`); ValueError otherwise."""
    for name in names:
        if not _CAPABILITY.match(name) or name.startswith("CAP_") or name == "ALL":
            raise ValueError(
                f"executor_capabilities: {name!r} is not a capability name (write CHOWN, not CAP_CHOWN)"
            )


def pod_context(*, restricted: bool, fs_group: int) -> dict[str, Any]:
    context: dict[str, Any] = {
        "seccompProfile": dict(RUNTIME_DEFAULT),
        "fsGroup": fs_group,
        # Only a volume whose root does not already belong to the group is walked and changed.
        "fsGroupChangePolicy": "OnRootMismatch",
    }
    if restricted:
        context["runAsNonRoot"] = True
    return context


def poiesis_context(uid: int) -> dict[str, Any]:
    """Poiesis's own containers: `restricted` whatever the executors' mode."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": dict(RUNTIME_DEFAULT),
    }


def executor_context(
    *, restricted: bool, capabilities: list[str], user: int | None, group: int | None
) -> dict[str, Any]:
    context: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "seccompProfile": dict(RUNTIME_DEFAULT),
    }
    if restricted:
        context["capabilities"] = {"drop": ["ALL"]}
        context["runAsNonRoot"] = True
    else:
        context["capabilities"] = {"drop": ["ALL"], **({"add": list(capabilities)} if capabilities else {})}
    if user is not None:
        context["runAsUser"] = user
    if group is not None:
        context["runAsGroup"] = group
    return context
