"""Prometheus metrics of the API: after a scripted run of tasks the scraped values are exactly what
happened, counted from the database whoever wrote it; the exposition parses with Prometheus's own
text parser; no label carries a task id or an owner."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from poiesis.adapters.sqlalchemy.engine import create_engine
from poiesis.adapters.sqlalchemy.store import SqlAlchemyTaskStore
from poiesis.domain.states import State
from poiesis.domain.times import parse_time
from tests.support.server import running_server

TASK = {"executors": [{"image": "alpine", "command": ["true"]}]}


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def write_elsewhere(database_url: str, moves: list[tuple[str, State]]) -> None:
    """Transitions as a task's recorder or tctl writes them: another process, the same database."""

    async def run() -> None:
        engine = create_engine(database_url, writer=True)
        store = SqlAlchemyTaskStore(engine)
        for task_id, state in moves:
            assert await store.transition(task_id, state, now=parse_time("2026-12-01T00:00:00Z"))
        await engine.dispose()

    asyncio.run(run())


def test_a_scripted_run_is_counted_exactly(database_url: str, tmp_path: Path) -> None:
    env = {"POIESIS_BACKEND": "none", "POIESIS_METRICS_CACHE_SECONDS": "0"}
    with running_server("api", database_url, tmp_path, env) as server, httpx.Client(timeout=10) as http:
        ids = [http.post(f"{server.tes}/tasks", json=TASK).json()["id"] for _ in range(5)]
        assert http.post(f"{server.tes}/tasks", json={"executors": []}).status_code == 400
        assert http.get(f"{server.tes}/tasks/nope").status_code == 404
        assert http.post(f"{server.tes}/tasks/{ids[0]}:cancel").status_code == 200
        write_elsewhere(
            database_url,
            [
                (ids[1], State.RUNNING),
                (ids[1], State.COMPLETE),
                (ids[2], State.RUNNING),
                (ids[2], State.EXECUTOR_ERROR),
                (ids[3], State.INITIALIZING),
            ],
        )
        for task_id in ids:
            http.get(f"{server.tes}/tasks/{task_id}")
        samples = scrape(server.url)
        again = scrape(server.url)

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    stored = {s.value: value("poiesis_tasks", state=s.value) for s in State if s is not State.UNKNOWN}
    assert stored == {
        **{s.value: 0.0 for s in State if s is not State.UNKNOWN},
        "QUEUED": 1.0,
        "INITIALIZING": 1.0,
        "COMPLETE": 1.0,
        "EXECUTOR_ERROR": 1.0,
        "CANCELED": 1.0,
    }
    assert value("poiesis_tasks_ended_total", state="COMPLETE") == 1.0
    assert value("poiesis_tasks_ended_total", state="CANCELED") == 1.0
    assert value("poiesis_tasks_ended_total", state="SYSTEM_ERROR") == 0.0
    assert value("poiesis_tasks_created_total") == 5.0
    tasks_route, task_route = "/ga4gh/tes/v1/tasks", "/ga4gh/tes/v1/tasks/{ref}"
    count = "poiesis_http_request_duration_seconds_count"
    assert value(count, method="POST", route=tasks_route, status="200") == 5.0
    assert value(count, method="POST", route=tasks_route, status="400") == 1.0
    assert value(count, method="GET", route=task_route, status="404") == 1.0
    assert value(count, method="GET", route=task_route, status="200") == 5.0
    assert value(count, method="POST", route=task_route, status="200") == 1.0  # the cancel
    assert value("poiesis_task_submit_duration_seconds_count", outcome="ok") == 5.0
    # The second scrape sees the first one.
    assert again[(count, (("method", "GET"), ("route", "/metrics"), ("status", "200")))] == 1.0
    labels = {v for key in samples for _, v in key[1]}
    assert not labels & set(ids)


def test_metrics_can_be_turned_off(database_url: str, tmp_path: Path) -> None:
    env = {"POIESIS_BACKEND": "none", "POIESIS_METRICS": "false"}
    with running_server("api", database_url, tmp_path, env) as server:
        assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 404


def test_no_request_can_add_a_series_of_its_own(database_url: str, tmp_path: Path) -> None:
    env = {"POIESIS_BACKEND": "none"}
    probes = [f"probe-{n}-{'x' * 50}" for n in range(20)]
    with running_server("api", database_url, tmp_path, env) as server, httpx.Client(timeout=10) as http:
        for probe in probes:
            assert http.get(f"{server.url}/{probe}").status_code == 404
            assert http.request("PROPFIND", f"{server.tes}/tasks/{probe}").status_code == 405
        samples = scrape(server.url)
    requests = {k[1] for k in samples if k[0] == "poiesis_http_request_duration_seconds_count"}
    assert (("method", "GET"), ("route", "unmatched"), ("status", "404")) in requests
    # A method no handler takes is refused by the router, before any route is matched.
    assert (("method", "other"), ("route", "unmatched"), ("status", "405")) in requests
    values = {v for labels in requests for _, v in labels}
    assert not [v for v in values if "probe" in v or v == "PROPFIND"]
    assert (
        samples[
            (
                "poiesis_http_request_duration_seconds_count",
                (("method", "GET"), ("route", "unmatched"), ("status", "404")),
            )
        ]
        == 20
    )


@pytest.mark.parametrize("cache", [60.0])
def test_the_counts_are_read_at_most_once_per_cache_period(
    database_url: str, tmp_path: Path, cache: float
) -> None:
    env = {"POIESIS_BACKEND": "none", "POIESIS_METRICS_CACHE_SECONDS": str(cache)}
    with running_server("api", database_url, tmp_path, env) as server, httpx.Client(timeout=10) as http:
        first = scrape(server.url)
        http.post(f"{server.tes}/tasks", json=TASK)
        second = scrape(server.url)
    key = ("poiesis_tasks", (("state", "QUEUED"),))
    assert first[key] == second[key] == 0.0
    assert second[("poiesis_tasks_created_total", ())] == 1.0


@pytest.mark.skipif(
    not Path("/usr/bin/bwrap").exists(), reason="bubblewrap is not installed: run scripts/test"
)
def test_the_local_backend_reports_its_load_and_the_time_tasks_spent_in_each_state(tmp_path: Path) -> None:
    import time

    import tes

    from tests.support.server import local_serve
    from tests.support.tasks import wait_ended

    def sleep(seconds: float) -> dict[str, object]:
        return {"executors": [{"image": "alpine", "command": ["sleep", str(seconds)]}]}

    with local_serve(tmp_path, max_tasks=1) as server, httpx.Client(timeout=10) as http:
        client = tes.HTTPClient(server.url, timeout=10)
        for _ in range(2):
            assert (
                wait_ended(client, http.post(f"{server.tes}/tasks", json=sleep(0.5)).json()["id"], 60).state
                == "COMPLETE"
            )
        ended = scrape(server.url)
        first = http.post(f"{server.tes}/tasks", json=sleep(60)).json()["id"]
        second = http.post(f"{server.tes}/tasks", json=sleep(60)).json()["id"]
        limit = time.monotonic() + 30
        while http.get(f"{server.tes}/tasks/{first}").json()["state"] != "RUNNING":
            assert time.monotonic() < limit
            time.sleep(0.1)
        busy = scrape(server.url)
        for task_id in (first, second):
            assert http.post(f"{server.tes}/tasks/{task_id}:cancel").status_code == 200
        idle = scrape(server.url)

    def count(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], state: str) -> float:
        return samples[("poiesis_task_state_duration_seconds_count", (("state", state),))]

    for state in ("QUEUED", "INITIALIZING", "RUNNING"):
        assert count(ended, state) == 2
    assert ended[("poiesis_task_state_duration_seconds_sum", (("state", "RUNNING"),))] >= 1.0
    assert ("poiesis_task_state_duration_seconds_count", (("state", "COMPLETE"),)) not in ended
    assert busy[("poiesis_local_tasks", (("phase", "running"),))] == 1
    assert busy[("poiesis_local_tasks", (("phase", "waiting"),))] == 1
    assert busy[("poiesis_local_slots", ())] == 1
    assert idle[("poiesis_local_tasks", (("phase", "running"),))] == 0
    assert idle[("poiesis_local_tasks", (("phase", "waiting"),))] == 0
    # Canceled tasks are not timed by the local backend.
    assert count(idle, "RUNNING") == 2
