"""Running one executor on this machine: in a bubblewrap sandbox, or in Docker/Podman.

Sandbox (bubblewrap): the executor sees a fresh root with the host's system directories read-only
(`/usr`, `/bin`, `/lib*`, `/etc`, `/opt`; not `/root`, `/home`, `/var`, `/srv` or any data), its
own `/proc`, `/dev`, `/tmp` and `/var`, and the task volume mounted at each of the task's
directories (inputs, outputs, volumes) at their absolute TES paths. It is never root of the host:
when the server runs as root the sandbox is started as the unprivileged `sandbox_uid`, inside a
user namespace it cannot leave (`--disable-userns`), with every capability dropped, no new
privileges, a session of its own (no terminal injection) and, unless the operator gives it the
host's network, a network namespace holding only a loopback of its own. Mounts it inherits are
locked by the kernel, so it cannot make a read-only system directory writable. Its PID namespace
dies with it, so stopping the sandbox stops every process the executor started. The image is not
used in this mode. A seccomp filter (`seccomp`) refuses the system calls a task has no use for.
Memory, CPU and processes are limited by the executor's cgroup where the host allows one
(`limits`); otherwise `ram_gb` is only an RLIMIT_DATA.

Container (docker/podman): `<engine> run --rm` with the same mounts, env, workdir, `--cpus` and
`--memory` from the task's resources, `--cap-drop ALL`, no new privileges, and `--network none`
unless the host's network is given.

Redirection: the server opens stdin/stdout/stderr inside the workspace without following links
(`beneath`) and hands the executor descriptors, never a path it could have steered.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import signal
import subprocess
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from poiesis.adapters.local import seccomp

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "opt")
NOT_STARTED = 127
"""The exit code of a program that could not be started, as shells and the launcher report it."""
SANDBOX_UID = 65534
"""The host user a root server runs the sandbox as (`nobody`)."""


@dataclass
class Launch:
    """One executor, ready to run."""

    name: str
    image: str
    command: list[str]
    mounts: dict[str, str]
    """TES directory -> host directory."""
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    stdin: int | None = None
    """Descriptors of the redirections, if any; the runtime closes them."""
    stdout: int | None = None
    stderr: int | None = None
    cpu_cores: int | None = None
    ram_bytes: int | None = None
    prefix: list[str] = field(default_factory=list)
    """Run before the runtime's own command (entering the executor's cgroup)."""
    inherited: list[int] = field(default_factory=list)
    """Descriptors passed to the runtime's command for this run (the seccomp program)."""


@dataclass
class Outcome:
    exit_code: int
    stdout_tail: str
    stderr_tail: str


class _Tail:
    """Copies a stream to an optional file and keeps its last `limit` bytes."""

    def __init__(self, limit: int, fd: int | None) -> None:
        self.limit = limit
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.file = os.fdopen(fd, "wb") if fd is not None else None  # closed in pump

    async def pump(self, stream: asyncio.StreamReader) -> None:
        try:
            while chunk := await stream.read(65536):
                if self.file:
                    await asyncio.to_thread(self.file.write, chunk)
                self.chunks.append(chunk)
                self.size += len(chunk)
                while self.size - len(self.chunks[0]) >= self.limit:
                    self.size -= len(self.chunks.popleft())
        finally:
            if self.file:
                self.file.close()

    def text(self) -> str:
        return b"".join(self.chunks)[-self.limit :].decode("utf-8", "replace")


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


class Runtime:
    name: str
    uses_images: bool
    sandbox_owner: tuple[int, int] | None = None
    """Who the executor runs as on the host, when that differs from the server (files it must
    write are handed to it)."""

    def argv(self, launch: Launch) -> list[str]:
        raise NotImplementedError

    def limits(self, launch: Launch) -> Callable[[], None] | None:
        return None

    def _exit(self, returncode: int, stderr: str) -> int:
        return _exit_code(returncode)

    def _inherited(self) -> list[int]:
        """Descriptors the runtime's command reads at start (created per run, closed after)."""
        return []

    async def run(self, launch: Launch, *, tail_bytes: int) -> Outcome:
        stdin: Any = launch.stdin if launch.stdin is not None else subprocess.DEVNULL
        stdout, stderr = _Tail(tail_bytes, launch.stdout), _Tail(tail_bytes, launch.stderr)
        inherited = self._inherited()
        launch.inherited = inherited
        try:
            process = await asyncio.create_subprocess_exec(
                *launch.prefix,
                *self.argv(launch),
                stdin=stdin,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                preexec_fn=self.limits(launch),
                pass_fds=inherited,
            )
        except BaseException:
            for tail in (stdout, stderr):
                if tail.file:
                    tail.file.close()
            raise
        finally:
            if launch.stdin is not None:
                os.close(launch.stdin)
            for fd in inherited:
                os.close(fd)
        assert process.stdout is not None
        assert process.stderr is not None
        try:
            await asyncio.gather(stdout.pump(process.stdout), stderr.pump(process.stderr))
            returncode = await process.wait()
        except asyncio.CancelledError:
            await self._stop(process, launch)
            raise
        err = stderr.text()
        return Outcome(self._exit(returncode, err), stdout.text(), err)

    async def _stop(self, process: asyncio.subprocess.Process, launch: Launch) -> None:
        """Stop the executor's whole process tree, then reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await asyncio.shield(process.wait())


class Bubblewrap(Runtime):
    name = "sandbox (bubblewrap)"
    uses_images = False

    def __init__(self, binary: str = "bwrap", *, uid: int = SANDBOX_UID, host_network: bool = False) -> None:
        self.binary = binary
        self.host_network = host_network
        # Only root can (and must) give the sandbox another user; anyone else runs it as themselves.
        self.sandbox_owner = (uid, uid) if os.geteuid() == 0 else None
        self.setpriv = shutil.which("setpriv") or "setpriv"
        self.seccomp = seccomp.program()

    def _inherited(self) -> list[int]:
        if self.seccomp is None:
            return []
        read, write = os.pipe()
        try:
            os.write(write, self.seccomp)  # a few hundred bytes: well within a pipe's buffer
        finally:
            os.close(write)
        return [read]

    def _as_sandbox_user(self) -> list[str]:
        """The prefix that starts bubblewrap as the sandbox's user, with no supplementary groups."""
        if self.sandbox_owner is None:
            return []
        uid, gid = self.sandbox_owner
        return [self.setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]

    def _exit(self, returncode: int, stderr: str) -> int:
        # bubblewrap reports a program it could not exec as its own failure (1): say 127, like
        # a shell and the Kubernetes launcher.
        if returncode == 1 and stderr.startswith("bwrap: execvp "):
            return NOT_STARTED
        return _exit_code(returncode)

    def _system(self, targets: list[str]) -> list[str]:
        """Read-only binds of the host's system directories, stepping around mount targets inside them."""
        args: list[str] = []

        def walk(directory: str, inner: list[str]) -> None:
            try:
                names = sorted(os.listdir(directory))
            except OSError:
                return
            for name in names:
                path = os.path.join(directory, name)
                below = [t for t in inner if t == path or t.startswith(path + "/")]
                if not below:
                    if os.path.islink(path):
                        args.extend(["--symlink", os.readlink(path), path])
                    else:
                        args.extend(["--ro-bind", path, path])
                elif path not in below and os.path.isdir(path) and not os.path.islink(path):
                    args.extend(["--dir", path])
                    walk(path, below)

        for top in SYSTEM_DIRS:
            path = "/" + top
            if not os.path.lexists(path):
                continue
            below = [t for t in targets if t == path or t.startswith(path + "/")]
            if os.path.islink(path):
                args.extend(["--symlink", os.readlink(path), path])
            elif not below:
                args.extend(["--ro-bind", path, path])
            elif path not in below:
                args.extend(["--dir", path])
                walk(path, below)
        return args

    def argv(self, launch: Launch) -> list[str]:
        targets = sorted(launch.mounts)
        args = [
            *self._as_sandbox_user(),
            self.binary,
            "--die-with-parent",
            "--new-session",
            "--unshare-user",
            "--disable-userns",
            "--cap-drop",
            "ALL",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            *([] if self.host_network else ["--unshare-net"]),
            *(["--seccomp", str(launch.inherited[0])] if launch.inherited else []),
            "--hostname",
            "poiesis-task",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            *([] if any(t == "/var" or t.startswith("/var/") for t in targets) else ["--tmpfs", "/var"]),
            "--dir",
            "/var/tmp",
            *self._system(targets),
        ]
        for target in targets:
            args.extend(["--bind", launch.mounts[target], target])
        workdir = launch.workdir or "/tmp"
        if not any(workdir == t or workdir.startswith(t + "/") for t in targets):
            args.extend(["--dir", workdir])
        args.extend(["--chdir", workdir, "--clearenv", "--setenv", "PATH", DEFAULT_PATH])
        args.extend(["--setenv", "HOME", "/tmp"])
        for key, value in launch.env.items():
            args.extend(["--setenv", key, value])
        return [*args, "--", *launch.command]

    def limits(self, launch: Launch) -> Callable[[], None] | None:
        ram = launch.ram_bytes
        if not ram or launch.prefix:  # in a cgroup, its memory limit is the one that holds
            return None

        def apply() -> None:
            resource.setrlimit(resource.RLIMIT_DATA, (ram, ram))

        return apply


class Container(Runtime):
    uses_images = True

    def __init__(self, engine: str, *, host_network: bool = False, max_processes: int = 4096) -> None:
        self.engine = engine
        self.name = engine
        self.host_network = host_network
        self.max_processes = max_processes

    def argv(self, launch: Launch) -> list[str]:
        args = [self.engine, "run", "--rm", "-i", "--name", launch.name, "--pull", "missing"]
        args += ["--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
        args += ["--network", "host" if self.host_network else "none"]
        for target, source in sorted(launch.mounts.items()):
            args.extend(["-v", f"{source}:{target}"])
        if launch.workdir:
            args.extend(["-w", launch.workdir])
        for key, value in launch.env.items():
            args.extend(["-e", f"{key}={value}"])
        if launch.cpu_cores:
            args.extend(["--cpus", str(launch.cpu_cores)])
        if launch.ram_bytes:
            args.extend(["--memory", str(launch.ram_bytes)])
        args.extend(["--pids-limit", str(self.max_processes)])
        return [*args, "--entrypoint", launch.command[0], launch.image, *launch.command[1:]]

    async def _stop(self, process: asyncio.subprocess.Process, launch: Launch) -> None:
        kill = await asyncio.create_subprocess_exec(
            self.engine, "rm", "-f", launch.name, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        await kill.wait()
        await super()._stop(process, launch)


def engine_works(engine: str) -> bool:
    if not shutil.which(engine):
        return False
    try:
        probe = subprocess.run([engine, "info"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def choose(
    preference: str, *, uid: int = SANDBOX_UID, host_network: bool = False, max_processes: int = 4096
) -> Runtime:
    """`auto`: Docker, then Podman, when their engine answers; otherwise the bubblewrap sandbox."""
    if preference in ("docker", "podman"):
        return Container(preference, host_network=host_network, max_processes=max_processes)
    if preference == "auto":
        for engine in ("docker", "podman"):
            if engine_works(engine):
                return Container(engine, host_network=host_network, max_processes=max_processes)
    binary = shutil.which("bwrap")
    if binary is None:
        raise RuntimeError(
            "no way to run executors: no Docker or Podman engine answers and bubblewrap is not installed "
            "(apt-get install bubblewrap)"
        )
    return Bubblewrap(binary, uid=uid, host_network=host_network)
