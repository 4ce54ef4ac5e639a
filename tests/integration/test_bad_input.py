"""Hostile or broken requests are refused at the door with a 400 naming the field, and the server
goes on answering; nothing that passes fails later for a reason the door could have seen."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.server import Server, running_server

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("bad")
    with running_server("serve", f"sqlite:///{tmp / 'p.db'}", tmp, {"POIESIS_BACKEND": "none"}) as s:
        yield s


def task(**fields: object) -> dict[str, object]:
    executor = {"image": "alpine", "command": ["echo", "hi"]} | fields.pop("executor", {})  # type: ignore[operator]
    return {"executors": [executor]} | fields


def dumps(body: object) -> bytes:
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(b'{"executors": [{"image": "a\xff", "command": ["x"]}]}', "body", id="invalid utf-8"),
        pytest.param(
            b'{"unknown": ' + b"[" * 1000 + b"]" * 1000 + b', "executors": []}', "body", id="nested 1000 deep"
        ),
        pytest.param(dumps(task(resources={"cpu_cores": 2**63})), "resources.cpu_cores", id="cpu 2^63"),
        pytest.param(dumps(task(resources={"cpu_cores": 100_000})), "resources.cpu_cores", id="cpu 100k"),
        pytest.param(
            b'{"executors": [{"image": "a", "command": ["x"]}], "resources": {"ram_gb": 1e300}}',
            "resources.ram_gb",
            id="ram 1e300",
        ),
        pytest.param(dumps(task(resources={"ram_gb": 1e12})), "resources.ram_gb", id="ram 1e12"),
        pytest.param(dumps(task(resources={"disk_gb": 1e12})), "resources.disk_gb", id="disk 1e12"),
        pytest.param(
            dumps(task(executor={"command": ["echo", "a\x00b"]})), "executors[0].command[1]", id="NUL arg"
        ),
        pytest.param(
            dumps(task(executor={"env": {"X": "a\x00b"}})), "executors[0].env.X", id="NUL env value"
        ),
        pytest.param(dumps(task(executor={"image": "alp\x00ine"})), "executors[0].image", id="NUL image"),
        pytest.param(dumps(task(volumes=["//"])), "volumes[0]", id="volume //"),
        pytest.param(
            dumps(task(inputs=[{"path": "//x.txt", "content": "x"}])), "inputs[0].path", id="input //x"
        ),
        pytest.param(dumps(task(volumes=["/data/./x"])), "volumes[0]", id="dot segment"),
        pytest.param(dumps(task(executor={"stdout": "/out//log"})), "executors[0].stdout", id="stdout //"),
        pytest.param(dumps(task(tags={f"k{i}": "v" for i in range(257)})), "tags", id="too many tags"),
        pytest.param(
            dumps(task(inputs=[{"path": f"/d{i}/f", "content": "x"} for i in range(1025)])),
            "inputs",
            id="too many directories",
        ),
        pytest.param(
            dumps(task(executor={"env": {f"V{i}": "x" for i in range(1025)}})),
            "executors[0].env",
            id="too many env",
        ),
        pytest.param(dumps(task(volumes=["/proc"])), "volumes[0]", id="volume hiding /proc"),
        pytest.param(
            dumps(task(inputs=[{"path": "/sys/fs/x", "content": "x"}])), "inputs[0].path", id="input in /sys"
        ),
        pytest.param(
            dumps(task(inputs=[{"path": "/d/a", "content": "f"}, {"path": "/d/a/b", "content": "x"}])),
            "inputs[1].path",
            id="input inside a FILE input",
        ),
    ],
)
def test_refused_at_the_door_with_the_field(server: Server, body: bytes, field: str) -> None:
    response = httpx.post(f"{server.tes}/tasks", content=body, headers=JSON, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field
    assert response.json()["status_code"] == 400


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param({"name_prefix": "x" * 50_000}, "name_prefix", id="50k name prefix"),
        pytest.param({"tag_key": "k" * 2000}, "tag_key", id="long tag key"),
        pytest.param({"tag_key": [f"k{i}" for i in range(65)]}, "tag_key", id="many tag filters"),
    ],
)
def test_over_long_filters_are_refused(server: Server, params: dict[str, object], field: str) -> None:
    response = httpx.get(f"{server.tes}/tasks", params=params, timeout=30)  # type: ignore[arg-type]
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param({"name_prefix": "a\x00b"}, "name_prefix", id="NUL name prefix"),
        pytest.param({"tag_key": "k\x00"}, "tag_key", id="NUL tag key"),
        pytest.param({"tag_key": "k", "tag_value": "v\x00"}, "tag_value", id="NUL tag value"),
    ],
)
def test_filters_with_a_nul_are_refused_at_the_door(
    server: Server, params: dict[str, str], field: str
) -> None:
    """PostgreSQL cannot hold a NUL in text: a filter with one is the caller's 400, never a 500."""
    response = httpx.get(f"{server.tes}/tasks", params=params, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field


def test_the_largest_accepted_request_does_not_stall_the_server(server: Server) -> None:
    """1,000 directories of 12 inputs each (the most directories allowed), while /healthz is polled."""
    inputs = [{"path": f"/data/d{i}/f{j}", "content": "x"} for i in range(1000) for j in range(12)]
    worst = 0.0
    done = threading.Event()

    def poll() -> None:
        nonlocal worst
        while not done.is_set():
            began = time.monotonic()
            httpx.get(f"{server.url}/healthz", timeout=30)
            worst = max(worst, time.monotonic() - began)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        response = httpx.post(
            f"{server.tes}/tasks", content=dumps(task(inputs=inputs)), headers=JSON, timeout=60
        )
    finally:
        done.set()
        poller.join()
    assert response.status_code == 200, response.text
    print(f"worst /healthz latency during the request: {worst * 1000:.0f} ms")


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("/ga4gh/tes/v1/tasks?name_prefix=" + "x" * 70_000, id="70 KB request line"),
        pytest.param(
            "/ga4gh/tes/v1/tasks?" + "&".join(f"a{i}=1" for i in range(20_000)), id="20k parameters"
        ),
    ],
)
def test_the_http_servers_own_refusals_are_the_json_error_body(server: Server, target: str) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body)["status_code"] == 400
    assert httpx.get(f"{server.url}/healthz").status_code == 200
