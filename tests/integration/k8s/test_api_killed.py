"""The API killed (SIGKILL) during a burst of creates, on the test cluster with PostgreSQL and two
tctl replicas: 8 clients send 200 creates, each with its own `Idempotency-Key`, and retry every
create that got no answer (the connection refused or cut, a timeout) with the same key until one
comes. Every create that got a 200 has its task; every key made exactly one task, whether its
first try was committed before the kill or not; each task ran once (one terminal write)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from tests.conftest import fresh_postgres_url_sync
from tests.integration.k8s.conftest import wait_until
from tests.integration.k8s.test_backend import Backend, backend, fresh_namespace
from tests.integration.k8s.test_tctl import BATCH, log_of, states_by_parity
from tests.support.server import stop, wait_ready

pytestmark = pytest.mark.postgres
CLIENTS, EACH = 8, 25


def restart_api(k: Backend, port: str) -> subprocess.Popen[bytes]:
    """A new API process on the same port, as a Deployment's replacement Pod behind its Service."""
    environ = os.environ | {"POIESIS_DATABASE_URL": k.database_url, "POIESIS_PORT": port} | k.env
    log = k.work / "api-restarted.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "poiesis.entrypoints.cli", "api"], env=environ, stdout=out, stderr=out
        )
    wait_ready(process, f"{k.server.url}/readyz", log, 60, "poiesis api (restarted)")
    return process


def test_the_api_killed_during_a_burst_loses_no_create_and_a_retry_with_its_key_makes_none_twice(
    api_client: client.ApiClient,
    kubeconfig: str,
    postgres_server: str,
    postgres_template: str,
    tmp_path: Path,
) -> None:
    database_url = fresh_postgres_url_sync(postgres_server, postgres_template)
    replacement: subprocess.Popen[bytes] | None = None
    try:
        with (
            fresh_namespace(api_client) as space,
            backend(api_client, kubeconfig, space, database_url, tmp_path, recorders=None, tctl=BATCH) as k,
        ):
            wait_until(k.leader, timeout=30, what="a tctl leader")
            answered: dict[str, str] = {}  # key -> the id its 200 named
            retried: set[str] = set()
            lock = threading.Lock()
            body = {"executors": [{"image": "registry.example/a:1", "command": ["a", "--run"]}]}

            def create(key: str) -> None:
                deadline = time.monotonic() + 180
                while True:
                    assert time.monotonic() < deadline, f"{key}: no answer in 3 minutes"
                    try:
                        response = httpx.post(
                            f"{k.server.tes}/tasks", json=body, headers={"Idempotency-Key": key}, timeout=5
                        )
                    except httpx.TransportError:
                        with lock:
                            retried.add(key)
                        time.sleep(0.2)
                        continue
                    if response.status_code == 503:  # the database or the API not ready yet
                        time.sleep(0.2)
                        continue
                    assert response.status_code == 200, response.text
                    with lock:
                        answered[key] = response.json()["id"]
                    return

            def client_run(c: int) -> None:
                for i in range(EACH):
                    create(f"client-{c}-create-{i}")

            threads = [threading.Thread(target=client_run, args=(c,)) for c in range(CLIENTS)]
            for thread in threads:
                thread.start()
            wait_until(lambda: len(answered) >= 50, timeout=60, what="50 creates answered")
            port = k.server.url.rsplit(":", 1)[1]
            k.server.process.send_signal(signal.SIGKILL)
            k.server.process.wait()
            killed_at = len(answered)
            replacement = restart_api(k, port)
            for thread in threads:
                thread.join()
            replays = (k.work / "api-restarted.log").read_text().count("a retried create (Idempotency-Key)")
            print(
                f"{killed_at} creates answered before the kill; {len(retried)} keys retried unanswered, "
                f"{replays} of them committed before the kill and answered with their first task"
            )
            assert killed_at < CLIENTS * EACH, "the kill came during the burst"
            assert retried, "some creates were cut by the kill and retried"
            assert len(answered) == CLIENTS * EACH
            ids = list(answered.values())
            assert len(set(ids)) == len(ids), "each key made its own task"
            # Nothing else was made: the database holds exactly the tasks the 200s named.
            listed: list[str] = []
            token = None
            while True:
                params = {"page_size": 256} | ({"page_token": token} if token else {})
                page = httpx.get(f"{k.server.tes}/tasks", params=params).json()
                listed += [t["id"] for t in page.get("tasks", [])]
                token = page.get("next_page_token")
                if not token:
                    break
            assert sorted(listed) == sorted(ids)
            ended = states_by_parity(k, ids, timeout=600)
            for task_id in ids:
                task = ended[task_id]
                assert task.state == "COMPLETE", (task_id, log_of(task).system_logs)
                assert sum(h == "COMPLETE" for h in k.history(task_id)) == 1, "ran and ended once"
    finally:
        if replacement is not None:
            stop(replacement)
