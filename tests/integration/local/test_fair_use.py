"""Fair use in embedded mode, through py-tes clients of two users (basic authentication): one
user's flood of tasks does not hold back another's few, the per-user cap holds at every instant
(sampled by an admin's listing), and a user's create rate past its burst is answered 429."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tes

from tests.support.server import Server, add_users, local_serve

if not Path("/usr/bin/bwrap").exists():
    pytest.skip(
        "bubblewrap (/usr/bin/bwrap) is not installed: scripts/sandbox installs it", allow_module_level=True
    )

USERS = {"flooder": "flooder-secret-1", "small": "small-secret-22", "admin": "admin-secret-333"}
FLOOD, FEW, PER_USER, SLOTS = 300, 5, 2, 3
IN_FLIGHT = {"INITIALIZING", "RUNNING"}


def client(server: Server, name: str) -> tes.HTTPClient:
    return tes.HTTPClient(server.url, user=name, password=USERS[name], timeout=30)


@pytest.fixture(scope="module")
def fair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("fair")
    env = {
        "POIESIS_AUTH": "basic",
        "POIESIS_BASIC_USERS_FILE": str(add_users(work / "users", USERS)),
        "POIESIS_BASIC_ADMINS": "admin",
        "POIESIS_MAX_ACTIVE_TASKS_PER_USER": str(PER_USER),
        "POIESIS_CREATE_RATE_PER_USER": "1",
        "POIESIS_CREATE_BURST_PER_USER": str(FLOOD),
    }
    with local_serve(work, env=env, max_tasks=SLOTS) as server:
        yield server


class Sampler:
    """The admin's view of every task, every 100 ms: the most each owner had in flight at once."""

    def __init__(self, server: Server, owner_of: dict[str, str]) -> None:
        self._http = httpx.Client(base_url=server.url, auth=("admin", USERS["admin"]), timeout=30)
        self._owner_of = owner_of
        self.peak: Counter[str] = Counter()
        self.peak_total = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _states(self) -> dict[str, str]:
        states: dict[str, str] = {}
        token = None
        while True:
            params = {"view": "MINIMAL", "page_size": "1000"} | ({"page_token": token} if token else {})
            page = self._http.get("/ga4gh/tes/v1/tasks", params=params).json()
            states |= {t["id"]: t["state"] for t in page.get("tasks", [])}
            token = page.get("next_page_token")
            if not token:
                return states

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            now = Counter(
                self._owner_of.get(task_id, "?") for task_id, s in self._states().items() if s in IN_FLIGHT
            )
            for owner, n in now.items():
                self.peak[owner] = max(self.peak[owner], n)
            self.peak_total = max(self.peak_total, sum(now.values()))
            self.samples += 1

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self._http.close()


def quick(name: str, seconds: float = 0) -> tes.Task:
    command = ["sleep", str(seconds)] if seconds else ["true"]
    return tes.Task(name=name, executors=[tes.Executor(image="alpine", command=command)])


def completed(tes_client: tes.HTTPClient, ids: list[str]) -> int:
    return sum(tes_client.get_task(t).state == "COMPLETE" for t in ids)


def test_a_flood_does_not_hold_back_a_small_users_few_tasks(fair: Server) -> None:
    flooder, small = client(fair, "flooder"), client(fair, "small")
    owner_of: dict[str, str] = {}
    with Sampler(fair, owner_of) as sampler:
        flood = []
        for n in range(FLOOD):
            task_id = flooder.create_task(quick(f"flood-{n}", 0.3))
            owner_of[task_id] = "flooder"
            flood.append(task_id)
        flood_before = completed(flooder, flood)
        few = []
        for n in range(FEW):
            task_id = small.create_task(quick(f"few-{n}"))
            owner_of[task_id] = "small"
            few.append(task_id)
        deadline = time.monotonic() + 300
        while any(small.get_task(t).state not in {"COMPLETE"} for t in few):
            assert time.monotonic() < deadline, "the small user's tasks did not finish"
            time.sleep(0.2)
        flood_during = completed(flooder, flood) - flood_before
        deadline = time.monotonic() + 900
        for task_id in flood:
            while flooder.get_task(task_id).state not in {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"}:
                assert time.monotonic() < deadline, f"{task_id} is stuck"
                time.sleep(0.2)
    # First come, first served, the small user's tasks would have waited for the rest of the flood.
    assert FLOOD - flood_before > 100, "the flood was still waiting when the small user came"
    assert flood_during < (FLOOD - flood_before) // 4, f"{flood_during} of the flood ran before the {FEW}"
    assert all(flooder.get_task(t).state == "COMPLETE" for t in flood), "nothing is lost"
    assert sampler.samples > 20
    assert sampler.peak["flooder"] == PER_USER, "the flooder used its whole share, and no more"
    assert sampler.peak["small"] <= PER_USER
    assert sampler.peak_total <= SLOTS
    # The last of the flood waited long for a slot: its FULL view says why.
    assert (
        "caps on tasks in flight are reached (max_active_tasks_per_user = 2, local_max_tasks = 3)"
        in flooder.get_task(flood[-1], view="FULL").logs[0].system_logs[0]
    )


def test_a_create_loop_past_its_burst_is_answered_429_and_others_are_not(tmp_path: Path) -> None:
    env = {
        "POIESIS_AUTH": "basic",
        "POIESIS_BASIC_USERS_FILE": str(add_users(tmp_path / "users", USERS)),
        "POIESIS_CREATE_RATE_PER_USER": "0.2",
        "POIESIS_CREATE_BURST_PER_USER": "3",
    }
    body = {"executors": [{"image": "alpine", "command": ["true"]}]}
    with local_serve(tmp_path, env=env, max_tasks=1) as server:
        loop = httpx.Client(base_url=server.url, auth=("flooder", USERS["flooder"]), timeout=30)
        other = httpx.Client(base_url=server.url, auth=("small", USERS["small"]), timeout=30)
        made = [loop.post("/ga4gh/tes/v1/tasks", json=body) for _ in range(3)]
        assert [r.status_code for r in made] == [200, 200, 200]
        refused = loop.post("/ga4gh/tes/v1/tasks", json=body)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 5
        assert "too many tasks created" in refused.json()["msg"]
        assert other.post("/ga4gh/tes/v1/tasks", json=body).status_code == 200, "a bucket per user"
        listed = loop.get("/ga4gh/tes/v1/tasks", params={"view": "MINIMAL"}).json()["tasks"]
        assert len(listed) == 3, "the refused create stored nothing"
        assert "poiesis_tasks_rate_limited_total 1.0" in httpx.get(f"{server.url}/metrics").text
        with pytest.raises(Exception, match="429"):
            client(server, "flooder").create_task(quick("one too many"))
        loop.close()
        other.close()
