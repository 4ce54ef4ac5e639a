"""Which requests the plain-ASGI routes take (the rest go to Litestar untouched), with in-memory
stand-ins for the services; tests/integration/test_hot_routes.py checks both paths answer alike."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from poiesis.domain.principal import Principal
from poiesis.domain.tes import View
from poiesis.entrypoints.edge import EdgeGuard
from poiesis.entrypoints.hot import HotRoutes

BASE = "/ga4gh/tes/v1"


class FakeAccess:
    async def principal(self, authorization: str | None, *, client: str) -> Principal:
        return Principal(name="alice")


class FakeTasks:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    async def document(self, task_id: str, *, view: View, owner: str | None) -> bytes:
        self.calls.append(("document", (task_id, view, owner)))
        return b'{"id": "t"}'

    async def create(self, body: bytes, *, owner: str, idempotency_key: str | None = None) -> str:
        self.calls.append(("create", (body, owner)))
        return "01arz3ndektsv4rrffq69g5fav"


def _app() -> tuple[Any, FakeTasks]:
    tasks = FakeTasks()
    state = SimpleNamespace(access=FakeAccess(), tasks=tasks, edge=EdgeGuard(hosts=None, origins=frozenset()))
    return SimpleNamespace(state=state), tasks


async def _call(method: str, path: str, query: bytes = b"", body: bytes = b"") -> tuple[bool, list[Any], Any]:
    app, tasks = _app()
    routes = HotRoutes(app, BASE, max_body_bytes=1000)
    sent: list[Any] = []
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")]
    scope = {"type": "http", "method": method, "path": path, "query_string": query, "headers": headers}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    taken = await routes(scope, receive, send)
    return taken, sent, tasks


async def test_the_two_requests_are_taken_and_answered() -> None:
    taken, sent, tasks = await _call("GET", f"{BASE}/tasks/abc", b"view=FULL")
    assert taken
    assert (sent[0]["status"], sent[1]["body"]) == (200, b'{"id": "t"}')
    assert tasks.calls == [("document", ("abc", View.FULL, "alice"))]
    taken, sent, tasks = await _call("POST", f"{BASE}/tasks", body=b"{}")
    assert taken
    assert sent[0]["status"] == 200
    assert tasks.calls == [("create", (b"{}", "alice"))]
    taken, sent, tasks = await _call("POST", f"{BASE}/tasks", body=b"x" * 1001)
    assert taken
    assert sent[0]["status"] == 413
    assert not tasks.calls


async def test_anything_else_is_left_untouched_for_litestar() -> None:
    for method, path, query in [
        ("GET", f"{BASE}/tasks", b""),  # ListTasks
        ("GET", f"{BASE}/tasks/abc", b"view=FULL&view=BASIC"),
        ("GET", f"{BASE}/tasks/abc", b"other=1"),
        ("GET", f"{BASE}/tasks/abc", "view=ü".encode()),
        ("GET", f"{BASE}/tasks/", b""),
        ("GET", f"{BASE}/tasks/a/b", b""),
        ("POST", f"{BASE}/tasks", b"x=1"),
        ("POST", f"{BASE}/tasks/abc:cancel", b""),
        ("GET", f"{BASE}/service-info", b""),
        ("PUT", f"{BASE}/tasks", b""),
    ]:
        taken, sent, tasks = await _call(method, path, query)
        assert (taken, sent, tasks.calls) == (False, [], []), (method, path, query)
