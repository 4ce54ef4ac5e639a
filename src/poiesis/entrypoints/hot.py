"""The two requests a workflow engine sends most, answered in plain ASGI: CreateTask
(`POST /tasks`) and GetTask (`GET /tasks/{id}`, with at most a `view`).

Litestar's routing, dependency injection, signature parsing and response machinery were a third of
these requests' cost; here each is the front door's check (`EdgeGuard.check`), the caller's
principal, one TaskService call and the same response Litestar gives, with the same error bodies
(`api.error_response`). Anything else, and these two with anything unusual (another query
parameter, a repeated `view`, CORS configured), goes to Litestar as before.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from litestar.datastructures import Headers
from litestar.exceptions import HTTPException

from poiesis.domain.errors import PoiesisError
from poiesis.domain.listing import parse_view
from poiesis.domain.principal import Principal, owner_scope
from poiesis.domain.tes import CreateTaskResponse

log = logging.getLogger(__name__)

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class _Gone(Exception):
    """The client went away before its request's body arrived."""


def _too_large() -> HTTPException:
    return HTTPException(status_code=413, detail="Request Entity Too Large")


class HotRoutes:
    def __init__(self, app: Any, base: str, *, max_body_bytes: int) -> None:
        """`app`: the Litestar application, whose state holds the services once it has started."""
        self._app = app
        self._tasks = base + "/tasks"
        self._task_prefix = base + "/tasks/"
        self._max_body = max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> bool:
        """Answer the request if it is one of the two; False (nothing read or sent) if not."""
        method, path = scope["method"], scope["path"]
        if method == "POST" and path == self._tasks and not scope.get("query_string"):
            scope["path_template"] = self._tasks
            await self._answer(scope, send, self._create(scope, receive))
            return True
        if method == "GET" and path.startswith(self._task_prefix):
            ref = path[len(self._task_prefix) :]
            plain, view = _only_view(scope.get("query_string") or b"")
            if not ref or "/" in ref or not plain:
                return False
            scope["path_template"] = self._task_prefix + "{ref}"
            await self._answer(scope, send, self._get(scope, ref, view))
            return True
        return False

    async def _caller(self, scope: dict[str, Any]) -> tuple[Headers, Principal]:
        """The request's headers once the front door lets it through, and who sent it."""
        headers = Headers.from_scope(scope)  # type: ignore[arg-type]
        self._app.state.edge.check(scope, headers)
        access = self._app.state.access
        principal: Principal = await access.principal(headers.get("authorization"), client=_client(scope))
        return headers, principal

    async def _create(self, scope: dict[str, Any], receive: Receive) -> bytes:
        from poiesis.entrypoints.api import audit_line

        headers, principal = await self._caller(scope)
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_body:
            raise _too_large()
        body = await _body(receive, self._max_body)
        task_id = await self._app.state.tasks.create(
            body, owner=principal.name, idempotency_key=headers.get("idempotency-key")
        )
        audit_line("create", task_id, principal, _client(scope))
        metrics = getattr(self._app.state, "metrics", None)
        if metrics is not None:
            metrics.created.inc()
        return msgspec.json.encode(CreateTaskResponse(id=task_id))

    async def _get(self, scope: dict[str, Any], ref: str, view: str | None) -> bytes:
        _, principal = await self._caller(scope)
        document: bytes = await self._app.state.tasks.document(
            ref, view=parse_view(view), owner=owner_scope(principal)
        )
        return document

    async def _answer(self, scope: dict[str, Any], send: Send, work: Awaitable[bytes]) -> None:
        from poiesis.entrypoints.api import error_parts

        status, extra = 200, list[tuple[bytes, bytes]]()
        try:
            body = await work
        except _Gone:
            return
        except (PoiesisError, HTTPException) as exc:
            status, body, extra = error_parts(exc, self._app.state.access, scope)
        except Exception as exc:
            log.exception("unhandled error", exc_info=exc)
            status, body, extra = error_parts(exc, self._app.state.access, scope)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _client(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _only_view(query: bytes) -> tuple[bool, str | None]:
    """Whether the query holds nothing but one ASCII `view`, and that view (None: none given)."""
    if not query:
        return True, None
    if not query.isascii():
        return False, None
    pairs = parse_qsl(query.decode("ascii"), keep_blank_values=True)
    if len(pairs) != 1 or pairs[0][0] != "view":
        return False, None
    return True, pairs[0][1]


async def _body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Gone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
