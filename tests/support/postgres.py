"""A private PostgreSQL for the test session, started through scripts/postgres."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def available() -> bool:
    return any(Path("/usr/lib/postgresql").glob("*/bin/initdb")) or bool(shutil.which("apt-get"))


@contextmanager
def private_postgres(*, durable: bool = False) -> Iterator[str]:
    """Yield the URL of a PostgreSQL server; POIESIS_TEST_POSTGRES_URL names an existing one.
    `durable` (benchmarks): always a server of its own, with fsync on (POIESIS_PG_DURABLE)."""
    existing = os.environ.get("POIESIS_TEST_POSTGRES_URL")
    if existing and not durable:
        yield existing
        return
    directory = tempfile.mkdtemp(prefix="poiesis-pg-")
    port = free_port()
    script = str(ROOT / "scripts" / "postgres")
    env = os.environ | ({"POIESIS_PG_DURABLE": "1"} if durable else {})
    try:
        up = [script, "up", directory, str(port)]
        started = subprocess.run(up, check=True, capture_output=True, text=True, env=env)
        url = started.stdout.strip().splitlines()[-1]
        yield url
    finally:
        subprocess.run([script, "down", directory], check=False, capture_output=True)
