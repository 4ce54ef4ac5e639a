"""The system calls a sandboxed executor is refused, as a seccomp filter built by libseccomp.

bubblewrap loads the filter just before it starts the executor (its own mounts are done by then),
and every process the executor starts inherits it. Refused calls fail with EPERM, as they would for
an unprivileged process, so programs that probe for them carry on. What is refused, and why: a
task has no business with the kernel's mount table, with other processes' memory, with kernel
keyrings, eBPF, kernel modules, rebooting, swap, the system clock or new namespaces; each of these
is attack surface on the host's kernel that ordinary scientific programs never use. Syscalls of a
foreign architecture (32-bit entry points on x86-64) kill the process (libseccomp's default).
"""

from __future__ import annotations

import errno
import logging
import tempfile

log = logging.getLogger(__name__)

DENIED = (
    # the mount table and the filesystem's roots
    "mount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount",
    "open_tree", "mount_setattr", "name_to_handle_at", "open_by_handle_at", "quotactl",
    # other processes and namespaces
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "setns", "unshare",
    # kernel keyrings
    "add_key", "request_key", "keyctl",
    # eBPF, performance counters, userfaultfd (kernel exploit staples)
    "bpf", "perf_event_open", "userfaultfd",
    # kernel modules, rebooting, kexec, swap, accounting, the kernel log
    "init_module", "finit_module", "delete_module", "reboot", "kexec_load", "kexec_file_load",
    "swapon", "swapoff", "acct", "syslog",
    # the system clock and port I/O
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "iopl", "ioperm",
)  # fmt: skip


def program() -> bytes | None:
    """The filter as a BPF program for `bwrap --seccomp`, or None where libseccomp is missing."""
    try:
        import pyseccomp
    except (ImportError, OSError) as exc:  # the package loads libseccomp.so.2 when imported
        log.warning("no seccomp filter for the sandbox: %s", exc)
        return None
    rules = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    for name in DENIED:
        try:
            rules.add_rule(pyseccomp.ERRNO(errno.EPERM), name)
        except (OSError, ValueError, RuntimeError):
            log.debug("seccomp: %s is unknown on this architecture", name)
    with tempfile.TemporaryFile() as out:
        rules.export_bpf(out)
        out.seek(0)
        return out.read()
