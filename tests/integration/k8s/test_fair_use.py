"""Caps on the tasks in flight, on the test cluster: two users (basic authentication), the API,
two `poiesis tctl` replicas and a recorder per Pod. Tasks over a cap are accepted and held QUEUED
with nothing in the cluster; the tctl leader releases them in fair order; a sampler of the task
Jobs checks the caps at every instant."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import tes
from kubernetes import client

from poiesis.adapters.kubernetes.taskpod import TASK_LABEL
from tests.integration.k8s.conftest import wait_until
from tests.integration.k8s.test_backend import Backend, backend, database_url, ex, namespace
from tests.integration.k8s.test_tctl import TCTL
from tests.support.server import add_users

pytestmark = pytest.mark.postgres
__all__ = ["database_url", "namespace"]  # fixtures used here

PER_USER, TOTAL = 2, 3
USERS = {"flooder": "flooder-secret-1", "small": "small-secret-22"}


class JobSampler:
    """Lists the task Jobs every 50 ms: how many each owner had at once, at most."""

    def __init__(self, batch: client.BatchV1Api, namespace: str, owner_of: dict[str, str]) -> None:
        self._batch = batch
        self._namespace = namespace
        self._owner_of = owner_of
        self.peak: Counter[str] = Counter()
        self.peak_total = 0
        self.samples = 0
        self.ever: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            jobs = self._batch.list_namespaced_job(self._namespace, label_selector=TASK_LABEL).items
            live = [j.metadata.labels[TASK_LABEL] for j in jobs if j.metadata.deletion_timestamp is None]
            self.ever.update(live)
            now = Counter(self._owner_of.get(task_id, "?") for task_id in live)
            for owner, n in now.items():
                self.peak[owner] = max(self.peak[owner], n)
            self.peak_total = max(self.peak_total, sum(now.values()))
            self.samples += 1

    def __enter__(self) -> JobSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture(scope="module")
def capped(
    api_client: client.ApiClient,
    kubeconfig: str,
    namespace: str,
    database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Backend]:
    work: Path = tmp_path_factory.mktemp("fair")
    env = {
        "POIESIS_AUTH": "basic",
        "POIESIS_BASIC_USERS_FILE": str(add_users(work / "users", USERS)),
        "POIESIS_MAX_ACTIVE_TASKS_PER_USER": str(PER_USER),
        "POIESIS_MAX_ACTIVE_TASKS": str(TOTAL),
    }
    tctl = TCTL | {"release_seconds": 0.5}
    with backend(api_client, kubeconfig, namespace, database_url, work, tctl=tctl, env=env) as running:
        wait_until(running.leader, timeout=30, what="a tctl leader")
        yield running


def user(k: Backend, name: str) -> tes.HTTPClient:
    return tes.HTTPClient(k.server.url, user=name, password=USERS[name], timeout=10)


def has_job(k: Backend, task_id: str) -> bool:
    return bool(k.batch.list_namespaced_job(k.namespace, label_selector=f"{TASK_LABEL}={task_id}").items)


def held_gauge(k: Backend) -> float | None:
    leader = k.leader()
    if leader is None:
        return None
    found = re.search(r"^poiesis_tctl_tasks_held (\S+)$", k.tctl_metrics(leader), re.M)
    return float(found.group(1)) if found else None


def test_held_tasks_wait_with_nothing_in_the_cluster_and_go_in_fair_order(capped: Backend) -> None:
    flooder, small = user(capped, "flooder"), user(capped, "small")
    owner_of: dict[str, str] = {}
    hang = tes.Task(executors=[ex("hang", KWOK_HANG="true")])
    with JobSampler(capped.batch, capped.namespace, owner_of) as sampler:
        flood = []
        for _ in range(8):
            task_id = flooder.create_task(hang)
            owner_of[task_id] = "flooder"
            flood.append(task_id)
        few = []
        for _ in range(2):
            task_id = small.create_task(hang)
            owner_of[task_id] = "small"
            few.append(task_id)
        # The flooder's two oldest (its cap) and the small user's first (the total's last slot).
        first = {flood[0], flood[1], few[0]}
        wait_until(lambda: all(has_job(capped, t) for t in first), timeout=60, what="three tasks released")
        for task_id in first:
            wait_until(lambda t=task_id: owner_task(capped, t).state == "RUNNING", timeout=60, what="running")
        time.sleep(2)  # several release passes: nobody else gets in
        for task_id in flood[2:] + few[1:]:
            assert owner_task(capped, task_id).state == "QUEUED"
            assert not has_job(capped, task_id), f"{task_id} is held: nothing in the cluster"
        wait_until(lambda: held_gauge(capped) == 7, timeout=30, what="the held gauge at 7")
        note = "caps on tasks in flight are reached (max_active_tasks_per_user = 2, max_active_tasks = 3)"
        wait_until(
            lambda: any(
                note in line for line in flooder.get_task(flood[6], view="FULL").logs[0].system_logs or []
            ),
            timeout=30,
            what="why the held task waits, in its FULL view",
        )

        # A held task's cancel is at once: it has nothing in the cluster.
        started = time.monotonic()
        flooder.cancel_task(flood[7])
        assert flooder.get_task(flood[7]).state == "CANCELED"
        cancel_seconds = time.monotonic() - started

        # A slot of the flooder's frees: each user has one in flight, the flooder's next is older.
        flooder.cancel_task(flood[0])
        wait_until(lambda: has_job(capped, flood[2]), timeout=60, what="the flooder's next released")
        assert not has_job(capped, few[1])
        # The small user's slot frees: its next goes, though the flooder has older tasks held.
        small.cancel_task(few[0])
        wait_until(lambda: has_job(capped, few[1]), timeout=60, what="the small user's next released")
        assert not has_job(capped, flood[3])

        for task_id in flood:
            flooder.cancel_task(task_id)
        small.cancel_task(few[1])
        for task_id in flood:
            wait_until(
                lambda t=task_id: flooder.get_task(t).state == "CANCELED", timeout=60, what="all canceled"
            )
        assert small.get_task(few[1]).state == "CANCELED"
        wait_until(lambda: not any(has_job(capped, t) for t in owner_of), timeout=60, what="no Job left")
    assert sampler.samples > 20
    assert sampler.peak["flooder"] <= PER_USER
    assert sampler.peak["small"] <= PER_USER
    assert sampler.peak_total <= TOTAL
    assert flood[7] not in sampler.ever, "a task cancelled while held never had a Job"
    assert cancel_seconds < 10
    assert "released: a slot is free" in capped.tctl_log()


def owner_task(k: Backend, task_id: str) -> tes.Task:
    for name in USERS:
        try:
            return user(k, name).get_task(task_id)
        except Exception:  # noqa: BLE001 - the other user's task is a 404 to this one
            continue
    raise AssertionError(f"{task_id} is nobody's")
