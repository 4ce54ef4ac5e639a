"""What a web page in the user's browser, or a DNS-rebinding page, can make the API do: nothing.

A real server on 127.0.0.1; the requests are what a browser sends for a cross-site form or fetch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import Server, running_server

TASK = b'{"executors": [{"image": "alpine", "command": ["true"]}]}'
JSON = {"Content-Type": "application/json"}
TRUSTED = "https://workflows.example.org"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("edge")
    env = {"POIESIS_BACKEND": "none", "POIESIS_CORS_ALLOW_ORIGINS": TRUSTED}
    with running_server("serve", f"sqlite:///{tmp / 'p.db'}", tmp, env) as s:
        yield s


def count(server: Server) -> int:
    return len(httpx.get(f"{server.tes}/tasks", params={"page_size": 2000}).json()["tasks"])


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param(
            {"Content-Type": "text/plain", "Origin": "https://evil.example"}, 403, id="cross-site text/plain"
        ),
        pytest.param({"Content-Type": "text/plain"}, 415, id="text/plain"),
        pytest.param({"Content-Type": "application/x-www-form-urlencoded"}, 415, id="form"),
        pytest.param({"Content-Type": "multipart/form-data; boundary=x"}, 415, id="multipart"),
        pytest.param({}, 415, id="no content type"),
        pytest.param(JSON | {"Origin": "https://evil.example"}, 403, id="cross-site JSON"),
        pytest.param(JSON | {"Origin": "null"}, 403, id="opaque origin"),
        pytest.param({"Content-Type": "text/plain", "Host": "evil.example"}, 400, id="rebinding"),
    ],
)
def test_a_browser_cannot_create_a_task(server: Server, headers: dict[str, str], status: int) -> None:
    before = count(server)
    response = httpx.post(f"{server.tes}/tasks", content=TASK, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["status_code"] == status
    assert count(server) == before


def test_the_api_answers_only_to_loopback_names_on_loopback(server: Server) -> None:
    rebound = httpx.get(f"{server.tes}/tasks", headers={"Host": "attacker.example:8000"})
    assert rebound.status_code == 400
    assert rebound.json()["field"] == "Host"
    port = server.url.rsplit(":", 1)[1]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST"):
        assert httpx.get(f"{server.tes}/service-info", headers={"Host": host}).status_code == 200, host


def test_same_origin_and_configured_origins_may_post(server: Server) -> None:
    for origin in (server.url, TRUSTED):
        response = httpx.post(f"{server.tes}/tasks", content=TASK, headers=JSON | {"Origin": origin})
        assert response.status_code == 200, (origin, response.text)


def test_a_cancel_with_no_body_works_from_a_command_line_but_not_from_a_page(server: Server) -> None:
    task_id = httpx.post(f"{server.tes}/tasks", content=TASK, headers=JSON).json()["id"]
    from_page = httpx.post(f"{server.tes}/tasks/{task_id}:cancel", headers={"Origin": "https://evil.example"})
    assert from_page.status_code == 403
    assert httpx.get(f"{server.tes}/tasks/{task_id}").json()["state"] == "QUEUED"
    assert httpx.post(f"{server.tes}/tasks/{task_id}:cancel").status_code == 200
    assert httpx.get(f"{server.tes}/tasks/{task_id}").json()["state"] == "CANCELED"


def test_cors_preflight_is_refused_for_other_origins(server: Server) -> None:
    preflight = httpx.options(
        f"{server.tes}/tasks",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.headers.get("access-control-allow-origin") != "https://evil.example"


def test_a_non_loopback_listener_accepts_any_host(tmp_path: Path) -> None:
    env = {"POIESIS_BACKEND": "none", "POIESIS_HOST": "0.0.0.0", "POIESIS_ALLOW_ANONYMOUS": "true"}
    with running_server("api", f"sqlite:///{tmp_path / 'p.db'}", tmp_path, env) as s:
        assert httpx.get(f"{s.tes}/service-info", headers={"Host": "tes.example.org"}).status_code == 200
