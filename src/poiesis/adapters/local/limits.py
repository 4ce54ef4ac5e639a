"""Resource limits for the local backend's executors: cgroup v1 where this host lets us write it.

Each executor runs in a cgroup of its own in the memory, pids and cpu hierarchies under
`<root>/<controller>/poiesis/`. The process enters it before bubblewrap starts (a shell writes its
own pid and then execs), so everything the executor forks is counted:

- `ram_gb` -> `memory.limit_in_bytes`. The sandbox's `/tmp` is a tmpfs whose pages are charged to
  the cgroup that wrote them, so writing there counts as memory too. Going over kills the
  executor (the kernel's OOM killer, exit 137), and the outcome names the limit;
- `cpu_cores` -> a CFS quota of that many cores;
- a process limit (`pids.max`, `local_max_processes`) for every executor, so a fork bomb stops at
  it instead of taking the host.

Where none of this can be written (not root, or a cgroup v2-only host without delegation),
`CgroupLimits.detect` returns None and the backend says in service-info and in each task's
`system_logs` which limits are not enforced.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

CONTROLLERS = ("memory", "pids", "cpu")
_ENTER = (
    'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; exec "$@"'
)


@dataclass
class Breach:
    oom_kills: int
    process_limit_hits: int


class Cgroup:
    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = paths

    def prefix(self) -> list[str]:
        """The argv prefix that puts the executor in this cgroup before anything of it runs."""
        procs = [str(p / "cgroup.procs") for p in self.paths.values()]
        return ["/bin/sh", "-c", _ENTER, "poiesis-enter", str(len(procs)), *procs]

    def breach(self) -> Breach:
        oom = 0
        with contextlib.suppress(OSError, ValueError):
            for line in (self.paths["memory"] / "memory.oom_control").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    oom = int(value)
        hits = 0
        with contextlib.suppress(OSError, ValueError):
            hits = int((self.paths["pids"] / "pids.events").read_text().split()[1])
        return Breach(oom_kills=oom, process_limit_hits=hits)

    def remove(self) -> None:
        """Remove the cgroup once its processes are gone (they are, once the sandbox ended)."""
        for path in self.paths.values():
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)  # the last process is still being reaped


class CgroupLimits:
    def __init__(self, root: Path, max_processes: int) -> None:
        self.root = root
        self.max_processes = max_processes

    @classmethod
    def detect(cls, max_processes: int, root: str = "/sys/fs/cgroup") -> CgroupLimits | None:
        base = Path(root)
        try:
            for controller in CONTROLLERS:
                parent = base / controller / "poiesis"
                parent.mkdir(exist_ok=True)
                probe = parent / f"probe-{os.getpid()}"
                probe.mkdir(exist_ok=True)
                probe.rmdir()
        except OSError:
            return None
        return cls(base, max_processes)

    def create(self, name: str, *, ram_bytes: int | None, cpu_cores: int | None) -> Cgroup:
        paths = {c: self.root / c / "poiesis" / name for c in CONTROLLERS}
        for path in paths.values():
            path.mkdir(exist_ok=True)
        cgroup = Cgroup(paths)
        try:
            (paths["pids"] / "pids.max").write_text(str(self.max_processes))
            if ram_bytes:
                (paths["memory"] / "memory.limit_in_bytes").write_text(str(ram_bytes))
                with contextlib.suppress(OSError):  # no swap accounting on some hosts
                    (paths["memory"] / "memory.memsw.limit_in_bytes").write_text(str(ram_bytes))
            if cpu_cores:
                (paths["cpu"] / "cpu.cfs_period_us").write_text("100000")
                (paths["cpu"] / "cpu.cfs_quota_us").write_text(str(cpu_cores * 100000))
        except BaseException:
            cgroup.remove()
            raise
        return cgroup
