"""The database restarts under a running API: requests fail cleanly with 503, nothing accepted is
lost, and the API recovers by itself when the database is back."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from poiesis.adapters.sqlalchemy.engine import create_engine
from poiesis.adapters.sqlalchemy.store import SqlAlchemyTaskStore
from poiesis.ports.store import StoreUnavailable
from tests.support import postgres
from tests.support.server import running_server

pytestmark = pytest.mark.postgres
SCRIPT = str(postgres.ROOT / "scripts" / "postgres")
BODY = b'{"name": "survivor", "executors": [{"image": "alpine", "command": ["true"]}]}'
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def own_postgres() -> Iterator[tuple[str, str]]:
    """A PostgreSQL of this test's own, since the test stops it."""
    if not postgres.available():
        pytest.skip("PostgreSQL is not installed: run scripts/test, or apt-get install postgresql")
    directory = tempfile.mkdtemp(prefix="poiesis-restart-pg-")
    port = str(postgres.free_port())
    url = subprocess.run([SCRIPT, "up", directory, port], check=True, capture_output=True, text=True)
    try:
        yield url.stdout.strip().splitlines()[-1], f"{directory} {port}"
    finally:
        subprocess.run([SCRIPT, "down", directory], check=False, capture_output=True)


def test_api_answers_503_while_the_database_is_down_and_recovers(
    own_postgres: tuple[str, str], tmp_path: Path
) -> None:
    url, place = own_postgres
    directory, port = place.split()
    with running_server("api", url, tmp_path) as server:
        before = httpx.post(f"{server.tes}/tasks", content=BODY, headers=JSON).json()["id"]
        subprocess.run([SCRIPT, "stop", directory], check=True, capture_output=True)

        for method, path, body in (
            ("POST", "/tasks", BODY),
            ("GET", f"/tasks/{before}", None),
            ("GET", "/tasks", None),
        ):
            response = httpx.request(method, server.tes + path, content=body, headers=JSON, timeout=30)
            assert response.status_code == 503, response.text
            error = response.json()
            assert error["status_code"] == 503
            assert "database unavailable" in error["msg"]
        assert httpx.get(f"{server.url}/readyz").status_code == 503
        assert httpx.get(f"{server.url}/healthz").status_code == 200, "alive, only not ready"

        subprocess.run([SCRIPT, "up", directory, port], check=True, capture_output=True)
        assert httpx.get(f"{server.url}/readyz").status_code == 200
        after = httpx.post(f"{server.tes}/tasks", content=BODY, headers=JSON)
        assert after.status_code == 200
        listed = httpx.get(f"{server.tes}/tasks", params={"name_prefix": "survivor"}).json()["tasks"]
        assert [t["id"] for t in listed] == [after.json()["id"], before]


async def test_a_database_shutting_down_is_unavailable_not_a_fault(own_postgres: tuple[str, str]) -> None:
    """While PostgreSQL waits for its last sessions to end it refuses new ones with SQLSTATE 57P03:
    callers must see the port's StoreUnavailable (retry later), not a driver error."""
    url, place = own_postgres
    directory = place.split()[0]
    holder = await asyncpg.connect(url)
    engine = create_engine(url)
    try:
        subprocess.run([SCRIPT, "drain", directory], check=True, capture_output=True)  # waits for `holder`
        with pytest.raises(StoreUnavailable, match="shutting down"):
            await SqlAlchemyTaskStore(engine).get("01hzzzzzzzzzzzzzzzzzzzzzzz")
    finally:
        await holder.close()
        await engine.dispose()
