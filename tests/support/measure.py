"""Peak memory of a child process, measured as its own.

`ru_maxrss` from wait4 is not: Linux carries the high-water mark of the memory a child was forked
from (this process) across its exec, so every child would look at least as large as its parent.
VmHWM in /proc counts only the child's own address space; it is sampled until the child exits.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def vm_hwm(pid: int) -> int:
    """A live process's peak resident set in bytes (0 once it has exited)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def wait_sampling(pid: int, every: float = 0.05) -> tuple[int, int]:
    """Reap the child `pid`: (its exit code, its peak RSS in bytes as last sampled).
    Raises ChildProcessError if something else reaped it."""
    peak = 0
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), peak
        peak = max(peak, vm_hwm(pid))
        time.sleep(every)
