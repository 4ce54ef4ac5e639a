"""CreateTask and GetTask are answered in plain ASGI (`entrypoints.hot`); the same request with one
more, ignored, query parameter goes through Litestar. Both must answer alike, for every outcome a
client or a hostile page can cause: status, body, content type and authentication challenge."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.server import basic_api

JSON = {"Content-Type": "application/json"}
BODY = b'{"name": "hot", "executors": [{"image": "alpine", "command": ["true"]}]}'


def _seen(response: httpx.Response) -> tuple[int, bytes, str | None, str | None]:
    return (
        response.status_code,
        response.content,
        response.headers.get("content-type"),
        response.headers.get("www-authenticate"),
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> object:
    with basic_api(
        tmp_path_factory.mktemp("hot"), {"alice": "alice-password-1", "bob": "bob-password-22"}
    ) as server:
        yield server


def test_get_answers_as_litestar_does(server: object, tmp_path: Path) -> None:
    tes = server.tes  # type: ignore[attr-defined]
    alice, bob = ("alice", "alice-password-1"), ("bob", "bob-password-22")
    created = httpx.post(f"{tes}/tasks", content=BODY, headers=JSON, auth=alice)
    assert created.status_code == 200
    task_id = created.json()["id"]
    cases: list[tuple[str, dict[str, object]]] = [
        (f"/tasks/{task_id}", {"auth": alice}),
        (f"/tasks/{task_id}?view=BASIC", {"auth": alice}),
        (f"/tasks/{task_id}?view=FULL", {"auth": alice}),
        (f"/tasks/{task_id}?view=MINIMAL", {"auth": alice}),
        (f"/tasks/{task_id}?view=", {"auth": alice}),
        (f"/tasks/{task_id}?view=bogus", {"auth": alice}),
        (f"/tasks/{task_id}?view=%42ASIC", {"auth": alice}),
        (f"/tasks/{task_id}", {"auth": bob}),  # another's task: not found
        (f"/tasks/{task_id}", {}),  # no credentials
        (f"/tasks/{task_id}", {"auth": ("alice", "wrong")}),
        ("/tasks/01arz3ndektsv4rrffq69g5fav", {"auth": alice}),
        (f"/tasks/{task_id}", {"auth": alice, "headers": {"Host": "evil.example"}}),  # rebinding
    ]
    for path, options in cases:
        hot = httpx.get(tes + path, **options)  # type: ignore[arg-type]
        sep = "&" if "?" in path else "?"
        routed = httpx.get(f"{tes}{path}{sep}ignored=1", **options)  # type: ignore[arg-type]
        assert _seen(hot) == _seen(routed), path
    assert httpx.get(f"{tes}/tasks/{task_id}", auth=alice).json()["id"] == task_id


def test_create_answers_as_litestar_does(server: object) -> None:
    tes = server.tes  # type: ignore[attr-defined]
    alice = ("alice", "alice-password-1")
    cases: list[tuple[bytes, dict[str, object]]] = [
        (b"{}", {"auth": alice, "headers": JSON}),  # no executors
        (b"not json", {"auth": alice, "headers": JSON}),
        (b'{"executors": [{"image": "a", "command": "no list"}]}', {"auth": alice, "headers": JSON}),
        (BODY, {"auth": alice, "headers": {"Content-Type": "text/plain"}}),  # a form a page could send
        (BODY, {"auth": alice, "headers": JSON | {"Origin": "https://evil.example"}}),  # cross-origin
        (BODY, {"headers": JSON}),
        (BODY, {"auth": ("alice", "wrong"), "headers": JSON}),
        (b'{"name": "' + b"x" * (17 * 1024 * 1024) + b'"}', {"auth": alice, "headers": JSON}),  # too large
        (BODY, {"auth": alice, "headers": JSON | {"Host": "evil.example"}}),
    ]
    for body, options in cases:
        hot = httpx.post(f"{tes}/tasks", content=body, **options)  # type: ignore[arg-type]
        routed = httpx.post(f"{tes}/tasks?ignored=1", content=body, **options)  # type: ignore[arg-type]
        assert hot.status_code >= 400, body[:40]
        assert _seen(hot) == _seen(routed), body[:40]
    first = httpx.post(f"{tes}/tasks", content=BODY, headers=JSON, auth=alice)
    second = httpx.post(f"{tes}/tasks?ignored=1", content=BODY, headers=JSON, auth=alice)
    assert first.status_code == second.status_code == 200
    assert first.headers["content-type"] == second.headers["content-type"] == "application/json"
    ids = {t["id"] for t in httpx.get(f"{tes}/tasks?name_prefix=hot", auth=alice).json()["tasks"]}
    assert {first.json()["id"], second.json()["id"]} <= ids
