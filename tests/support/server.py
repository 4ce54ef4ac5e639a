"""Run `poiesis` as a real server process, on 127.0.0.1 and a free port."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.postgres import free_port


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    workspaces: Path | None = None
    """The local backend's workspaces (`local_serve`)."""

    @property
    def tes(self) -> str:
        return f"{self.url}/ga4gh/tes/v1"


@contextmanager
def sandbox_workspaces() -> Iterator[Path]:
    """A workspaces directory the sandbox's unprivileged user can pass through (pytest's own
    temporary tree is private to root), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="poiesis-ws-", dir="/tmp"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def running_server(
    command: str, database_url: str, log_dir: Path, env: dict[str, str] | None = None, timeout: float = 30
) -> Iterator[Server]:
    port = free_port()
    log = log_dir / f"poiesis-{command}-{port}.log"
    environ = os.environ | {"POIESIS_DATABASE_URL": database_url, "POIESIS_PORT": str(port)} | (env or {})
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "poiesis.entrypoints.cli", command],
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(url=f"http://127.0.0.1:{port}", process=process, log=log)
    try:
        wait_ready(process, f"{server.url}/readyz", log, timeout, f"poiesis {command}")
        yield server
    finally:
        stop(process)


def wait_ready(
    process: subprocess.Popen[bytes], url: str, log: Path, timeout: float, what: str, pause: float = 0.1
) -> None:
    """Until `url` answers 200; raise with the end of `log` if `process` exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready: {log.read_text()[-3000:]}")
        time.sleep(pause)


def stop(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not ended within `timeout` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def local_serve(log_dir: Path, env: dict[str, str] | None = None, max_tasks: int = 8) -> Iterator[Server]:
    """`poiesis serve` on SQLite with the local backend running executors in its bubblewrap sandbox."""
    with sandbox_workspaces() as workspaces:
        environ = {
            "POIESIS_BACKEND": "local",
            "POIESIS_LOCAL_RUNTIME": "bwrap",
            "POIESIS_LOCAL_WORKSPACES": str(workspaces),
            "POIESIS_LOCAL_MAX_TASKS": str(max_tasks),
            "POIESIS_LOG_FORMAT": "text",
        } | (env or {})
        with running_server("serve", f"sqlite:///{log_dir / 'tes.db'}", log_dir, environ) as server:
            server.workspaces = workspaces
            yield server


def add_users(path: Path, users: dict[str, str]) -> Path:
    """A basic-auth users file made with `poiesis users add` (name: password)."""
    for name, password in users.items():
        command = [sys.executable, "-m", "poiesis.entrypoints.cli", "users", "add", name, "--file"]
        subprocess.run(
            [*command, str(path), "--password-stdin"],
            input=f"{password}\n",
            capture_output=True,
            text=True,
            check=True,
        )
    return path


@contextmanager
def basic_api(log_dir: Path, users: dict[str, str]) -> Iterator[Server]:
    """`poiesis api` (no backend) on SQLite with basic authentication for `users`."""
    env = {
        "POIESIS_BACKEND": "none",
        "POIESIS_AUTH": "basic",
        "POIESIS_BASIC_USERS_FILE": str(add_users(log_dir / "users", users)),
    }
    with running_server("api", f"sqlite:///{log_dir / 'tes.db'}", log_dir, env) as server:
        yield server
