"""What a web page in the user's browser, or a DNS-rebinding page, can make the API do: nothing.

A real server on 127.0.0.1; the requests are what a browser sends for a cross-site form or fetch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import Server, basic_api, running_server

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


def test_each_refusal_is_logged_once_with_who_and_why_and_never_a_credential(tmp_path: Path) -> None:
    password = "hunter2-never-logged"
    with basic_api(tmp_path, {"alice": "right-password"}) as server:
        wrong = ("alice", password)
        for _ in range(30):  # a flood: one line, and the next one counts the rest
            assert (
                httpx.post(f"{server.tes}/tasks", content=TASK, headers=JSON, auth=wrong).status_code == 401
            )
        assert httpx.get(f"{server.tes}/tasks", auth=wrong).status_code == 401
        assert httpx.get(f"{server.tes}/tasks?access_token=query-secret", auth=wrong).status_code == 401
        evil = JSON | {"Origin": "https://evil.example"}
        assert httpx.post(f"{server.tes}/tasks", content=TASK, headers=evil).status_code == 403
        plain = {"Content-Type": "text/plain"}
        assert httpx.post(f"{server.tes}/tasks", content=TASK, headers=plain, auth=wrong).status_code == 415
        assert httpx.get(f"{server.tes}/service-info", headers={"Host": "rebind.example"}).status_code == 400
        ok = httpx.get(f"{server.tes}/tasks", auth=("alice", "right-password"))
        assert ok.status_code == 200
        text = server.log.read_text()
    lines = [line for line in text.splitlines() if "refused" in line]
    unauthorized = [line for line in lines if "refused 401" in line]
    assert len(unauthorized) == 1, unauthorized
    assert "POST /ga4gh/tes/v1/tasks from 127.0.0.1" in unauthorized[0]
    assert "wrong user name or password" in unauthorized[0]
    assert any(
        "refused 403 POST /ga4gh/tes/v1/tasks from 127.0.0.1" in x and "evil.example" in x for x in lines
    )
    assert any("refused 415 POST" in x and "application/json" in x for x in lines)
    assert any("refused 400 GET /ga4gh/tes/v1/service-info" in x and "rebind.example" in x for x in lines)
    assert password not in text
    assert "query-secret" not in text
    assert "hunter2" not in text
