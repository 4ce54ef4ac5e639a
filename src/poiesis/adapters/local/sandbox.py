"""Running one executor on this machine: in a bubblewrap sandbox, or in Docker/Podman.

Sandbox (bubblewrap): the executor sees a fresh root with the host's system directories read-only
(`/usr`, `/bin`, `/lib*`, `/etc`, `/opt`, ...; not `/root`, `/home` or any data), its own `/proc`,
`/dev` and `/tmp`, and the task volume mounted at each of the task's directories (inputs, outputs,
volumes) at their absolute TES paths. The host's real paths are never written. Its PID namespace
dies with it, so stopping the sandbox stops every process the executor started. The image is not
used in this mode. Memory (`ram_gb`) is bounded by RLIMIT_DATA; CPU is not capped (no cgroup).

Container (docker/podman): `<engine> run --rm` with the same mounts, env, workdir, `--cpus` and
`--memory` from the task's resources.
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

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "opt", "srv", "var")


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
    stdin: str | None = None
    """Host paths of the redirections, if any."""
    stdout: str | None = None
    stderr: str | None = None
    cpu_cores: int | None = None
    ram_bytes: int | None = None


@dataclass
class Outcome:
    exit_code: int
    stdout_tail: str
    stderr_tail: str


class _Tail:
    """Copies a stream to an optional file and keeps its last `limit` bytes."""

    def __init__(self, limit: int, path: str | None) -> None:
        self.limit = limit
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.file = open(path, "wb") if path else None  # noqa: SIM115 (closed in pump)

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

    def argv(self, launch: Launch) -> list[str]:
        raise NotImplementedError

    def limits(self, launch: Launch) -> Callable[[], None] | None:
        return None

    async def run(self, launch: Launch, *, tail_bytes: int) -> Outcome:
        stdin: Any = subprocess.DEVNULL
        if launch.stdin:
            try:
                stdin = await asyncio.to_thread(open, launch.stdin, "rb")
            except OSError as exc:
                return Outcome(1, "", f"cannot open stdin: {exc.strerror}\n")
        stdout, stderr = _Tail(tail_bytes, launch.stdout), _Tail(tail_bytes, launch.stderr)
        try:
            process = await asyncio.create_subprocess_exec(
                *self.argv(launch),
                stdin=stdin,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                preexec_fn=self.limits(launch),
            )
        finally:
            if not isinstance(stdin, int):
                stdin.close()
        assert process.stdout is not None
        assert process.stderr is not None
        try:
            await asyncio.gather(stdout.pump(process.stdout), stderr.pump(process.stderr))
            returncode = await process.wait()
        except asyncio.CancelledError:
            await self._stop(process, launch)
            raise
        return Outcome(_exit_code(returncode), stdout.text(), stderr.text())

    async def _stop(self, process: asyncio.subprocess.Process, launch: Launch) -> None:
        """Stop the executor's whole process tree, then reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await asyncio.shield(process.wait())


class Bubblewrap(Runtime):
    name = "sandbox (bubblewrap)"
    uses_images = False

    def __init__(self, binary: str = "bwrap") -> None:
        self.binary = binary

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
            self.binary,
            "--die-with-parent",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname",
            "poiesis-task",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
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
        if not ram:
            return None

        def apply() -> None:
            resource.setrlimit(resource.RLIMIT_DATA, (ram, ram))

        return apply


class Container(Runtime):
    uses_images = True

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self.name = engine

    def argv(self, launch: Launch) -> list[str]:
        args = [self.engine, "run", "--rm", "-i", "--name", launch.name, "--pull", "missing"]
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


def choose(preference: str) -> Runtime:
    """`auto`: Docker, then Podman, when their engine answers; otherwise the bubblewrap sandbox."""
    if preference in ("docker", "podman"):
        return Container(preference)
    if preference == "auto":
        for engine in ("docker", "podman"):
            if engine_works(engine):
                return Container(engine)
    binary = shutil.which("bwrap")
    if binary is None:
        raise RuntimeError(
            "no way to run executors: no Docker or Podman engine answers and bubblewrap is not installed "
            "(apt-get install bubblewrap)"
        )
    return Bubblewrap(binary)
