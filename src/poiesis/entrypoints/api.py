"""The TES v1.1.0 REST API on Litestar.

Handlers parse, call one TaskService method and return a msgspec struct. Errors become HTTP in one
table (`_STATUS`), always with the same JSON body: `{"msg", "status_code", "field"?}`, where
`field` names the request field at fault.

The task endpoints take the caller's `Principal` as a dependency: tasks are created in its name,
and reads and cancels are confined to its own tasks unless it is an admin (`domain.principal`).
service-info, `/healthz` and `/readyz` are public. Every create and cancel is an audit line.
"""

from __future__ import annotations

import gc
import inspect
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from litestar import Litestar, MediaType, Request, Response, Router, get, post
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.params import FromPath, FromQuery, QueryParameter, SkipValidation

from poiesis.adapters.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from poiesis.adapters.metrics import ApiMetrics
from poiesis.domain.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    KeyReused,
    PoiesisError,
    TaskNotFound,
    TooManyRequests,
    Unauthenticated,
    Unavailable,
    UnsupportedMediaType,
)
from poiesis.domain.hosts import LOOPBACK_NAMES, is_loopback
from poiesis.domain.listing import build_query, parse_view
from poiesis.domain.principal import Principal, listing_owner, owner_scope
from poiesis.domain.tes import (
    CancelTaskResponse,
    CreateTaskResponse,
    ServiceInfo,
)
from poiesis.entrypoints.access import Access
from poiesis.entrypoints.container import ApiContainer
from poiesis.entrypoints.edge import EdgeGuard, refusals
from poiesis.entrypoints.hot import HotRoutes
from poiesis.entrypoints.openapi import ErrorBody, document
from poiesis.entrypoints.settings import SettingsError, auth_problems
from poiesis.ports.store import TaskStore
from poiesis.services.tasks import TaskService

if TYPE_CHECKING:
    from poiesis.adapters.tracing import Tracing

log = logging.getLogger(__name__)
audit = logging.getLogger("poiesis.audit")

BASE = "/ga4gh/tes/v1"
SHORT = "/v1"
"""The TES routes are served under `/v1` too, where Funnel serves them and Nextflow's TES executor
looks by default (`http://localhost:8000` + `/v1/tasks`); the OpenAPI document names only BASE."""

_STATUS: dict[type[PoiesisError], int] = {
    KeyReused: 422,
    InvalidRequest: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    TaskNotFound: 404,
    Conflict: 409,
    TooManyRequests: 429,
    UnsupportedMediaType: 415,
    Unavailable: 503,
}


def _error(status: int, msg: str, field: str | None = None) -> Response[ErrorBody]:
    return Response(ErrorBody(msg=msg, status_code=status, field=field), status_code=status)


def status_of(exc: Exception) -> int:
    """The HTTP status an error is answered with."""
    if isinstance(exc, HTTPException):
        return exc.status_code
    return next((code for kind, code in _STATUS.items() if isinstance(exc, kind)), 500)


def _domain_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    status, body, headers = error_parts(exc, request.app.state.access, request.scope)
    extra = {name.decode("latin-1"): value.decode("latin-1") for name, value in headers}
    return Response(body, status_code=status, media_type=MediaType.JSON, headers=extra)


def error_parts(exc: Exception, access: Access, scope: Any) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """The status, JSON body and extra headers an error is answered with (a domain error: its
    status and the field at fault; 401: the challenges), here and by `hot`'s routes."""
    status = status_of(exc)
    if isinstance(exc, PoiesisError):
        field = exc.field if isinstance(exc, InvalidRequest) else None
        body = ErrorBody(msg=str(exc), status_code=status, field=field)
    elif isinstance(exc, HTTPException):
        body = ErrorBody(msg=exc.detail, status_code=status)
    else:
        status, body = 500, ErrorBody(msg="internal error", status_code=500)
    headers = []
    if _at_the_door(exc):
        client = scope.get("client") if hasattr(scope, "get") else None
        refusals.refused(
            status,
            str(client[0]) if client else "unknown",
            str(scope.get("method", "")),
            str(scope.get("path", "")),
            str(exc),
        )
    if isinstance(exc, TooManyRequests):
        headers.append((b"retry-after", str(exc.retry_after).encode()))
    if isinstance(exc, Unauthenticated):
        sent = any(name == b"authorization" and value for name, value in scope.get("headers", ()))
        headers.append((b"www-authenticate", access.challenges(refused=sent).encode("latin-1")))
    return status, msgspec.json.encode(body), headers


def _at_the_door(exc: Exception) -> bool:
    """A refusal of who sent the request or how, before any handler looked at it."""
    if isinstance(exc, Unauthenticated | Forbidden | UnsupportedMediaType):
        return True
    return isinstance(exc, InvalidRequest) and exc.field == "Host"


def _client(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "unknown"


async def _principal(request: Request[Any, Any, Any]) -> Principal:
    access: Access = request.app.state.access
    return await access.principal(request.headers.get("authorization"), client=_client(request))


def _tasks(request: Request[Any, Any, Any]) -> TaskService:
    # From the app's state rather than as a dependency: the caller's principal is then a handler's
    # only dependency, resolved without a task group of its own on every request.
    tasks: TaskService = request.app.state.tasks
    return tasks


def _audit(event: str, task_id: str, principal: Principal, request: Request[Any, Any, Any]) -> None:
    audit_line(event, task_id, principal, _client(request))


def audit_line(event: str, task_id: str, principal: Principal, client: str) -> None:
    audit.info(
        "%s %s by %s",
        event,
        task_id,
        principal.name,
        extra={"fields": {"event": event, "task_id": task_id, "principal": principal.name, "client": client}},
    )


def _http_error(_: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    assert isinstance(exc, HTTPException)
    field = None
    msg = exc.detail
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        first = exc.extra[0]
        if isinstance(first, dict):
            field = first.get("key")
            msg = f"{field}: {first.get('message', exc.detail)}" if field else msg
    return _error(exc.status_code, msg, field)


def _unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    log.exception("unhandled error", exc_info=exc)
    return _error(500, "internal error")


@get("/service-info")
async def service_info(info: NamedDependency[ServiceInfo]) -> ServiceInfo:
    return info


@post("/tasks", status_code=200)
async def create_task(
    request: Request[Any, Any, Any],
    principal: NamedDependency[SkipValidation[Principal]],
) -> CreateTaskResponse:
    task_id = await _tasks(request).create(
        await request.body(), owner=principal.name, idempotency_key=request.headers.get("idempotency-key")
    )
    _audit("create", task_id, principal, request)
    metrics: ApiMetrics | None = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.created.inc()
    return CreateTaskResponse(id=task_id)


@get("/tasks")
async def list_tasks(
    request: Request[Any, Any, Any],
    principal: NamedDependency[SkipValidation[Principal]],
    owner: Annotated[
        str | None,
        QueryParameter(
            description="Poiesis extension: only this owner's tasks (admins only; others see their own)"
        ),
    ] = None,
    name_prefix: FromQuery[str | None] = None,
    state_filter: Annotated[str | None, QueryParameter(name="state")] = None,
    tag_key: Annotated[list[str] | None, QueryParameter(name="tag_key")] = None,
    tag_value: Annotated[list[str] | None, QueryParameter(name="tag_value")] = None,
    page_size: FromQuery[int | None] = None,
    page_token: FromQuery[str | None] = None,
    view: FromQuery[str | None] = None,
) -> Response[bytes]:
    query = build_query(
        owner=listing_owner(principal, owner),
        name_prefix=name_prefix,
        state=state_filter,
        tag_keys=tag_key or [],
        tag_values=tag_value or [],
        page_size=page_size,
        page_token=page_token,
        view=view,
    )
    return _json(await _tasks(request).page(query))


@get("/tasks/{ref:str}")
async def get_task(
    request: Request[Any, Any, Any],
    principal: NamedDependency[SkipValidation[Principal]],
    ref: FromPath[str],
    view: FromQuery[str | None] = None,
) -> Response[bytes]:
    # Documented as tesTask; the MINIMAL view is the {id, state} subset of it.
    return _json(await _tasks(request).document(ref, view=parse_view(view), owner=owner_scope(principal)))


def _json(body: bytes) -> Response[bytes]:
    """A response body the store rendered as JSON already."""
    return Response(body, media_type=MediaType.JSON)


@post("/tasks/{ref:str}", status_code=200)
async def cancel_task(
    request: Request[Any, Any, Any],
    principal: NamedDependency[SkipValidation[Principal]],
    ref: FromPath[str],
) -> CancelTaskResponse:
    # Litestar cannot route a parameter that shares its path segment with ":cancel".
    task_id, sep, verb = ref.rpartition(":")
    if not sep or verb != "cancel":
        raise TaskNotFound(ref)
    await _tasks(request).cancel(task_id, owner=owner_scope(principal))
    _audit("cancel", task_id, principal, request)
    return CancelTaskResponse()


@get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", include_in_schema=False)
async def readyz(store: NamedDependency[SkipValidation[TaskStore]]) -> Response[dict[str, str]]:
    try:
        await store.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", reported as such
        return Response({"status": "unavailable", "reason": str(exc)}, status_code=503)
    return Response({"status": "ok"})


class _MeasuredApp(Litestar):
    """The API, every HTTP request counted by method, route template and status once its response
    started (404s, refusals at the door and errors included)."""

    async def _serve(self, scope: Any, receive: Any, send: Any) -> None:
        hot: HotRoutes | None = getattr(self.state, "hot", None)
        if hot is None or scope["type"] != "http" or not await hot(scope, receive, send):
            await super().__call__(scope, receive, send)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and (scope["path"] + "/").startswith(SHORT + "/"):
            raw = scope.get("raw_path") or scope["path"].encode()
            scope = scope | {
                "path": BASE + scope["path"][len(SHORT) :],
                "raw_path": BASE.encode() + raw[len(SHORT) :],
            }
        metrics: ApiMetrics | None = getattr(self.state, "metrics", None)
        tracing: Tracing | None = getattr(self.state, "tracing", None)
        if scope["type"] != "http" or (metrics is None and tracing is None):
            await self._serve(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with tracing.request(scope) if tracing is not None else nullcontext() as finish:
            try:
                await self._serve(scope, receive, sending)
            finally:
                if metrics is not None:
                    metrics.request(
                        scope["method"], scope.get("path_template"), status, time.perf_counter() - started
                    )
                if finish is not None:
                    finish(status)


async def _resolved(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def create_app(container: ApiContainer) -> Litestar:
    settings = container.settings()
    problems = auth_problems(settings)
    if problems:
        raise SettingsError("; ".join(problems))

    tracing = None
    if settings.otlp_traces_endpoint:
        from poiesis.adapters.tracing import Tracing

        tracing = Tracing(settings.otlp_traces_endpoint, sample_ratio=settings.tracing_sample_ratio)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await container.init_resources()  # type: ignore[misc]
        try:
            if tracing is not None:
                threads = await _resolved(container.threads())
                tracing.engines(
                    await _resolved(container.writer()),
                    await _resolved(container.reader()),
                    *((threads.writer, threads.reader) if threads is not None else ()),
                )
                direct = await _resolved(container.direct())
                if direct is not None:
                    tracing.direct(direct)
                app.state.tracing = tracing
            # Providers that depend on async resources hand out awaitables: resolve them once.
            app.state.tasks = await _resolved(container.tasks())
            app.state.store = await _resolved(container.store())
            app.state.info = await _resolved(container.service_info())
            app.state.access = await _resolved(container.access())
            if settings.metrics:
                app.state.metrics = await _resolved(container.metrics())
            # What start-up made (modules, settings, pools: ~130,000 objects) lives as long as the
            # process: left out of the collector's full passes, which walked it all in a 100 ms
            # pause of every request under way, a few seconds after start and then now and again.
            gc.collect()
            gc.freeze()
            yield
        finally:
            gc.unfreeze()  # an app stopped within a process that goes on (embedding, tests)
            await container.shutdown_resources()  # type: ignore[misc]
            if tracing is not None:
                tracing.shutdown()

    def from_state(name: str) -> Provide:
        def provider(state: State) -> Any:
            return getattr(state, name)

        return Provide(provider, use_cache=True, sync_to_thread=False)

    tes = Router(
        path=BASE,
        route_handlers=[service_info, create_task, list_tasks, get_task, cancel_task],
        dependencies={
            "info": from_state("info"),
            "principal": Provide(_principal),
        },
    )
    spec = document(security=[{"oidc": "bearer", "basic": "basic"}[m] for m in settings.auth if m != "none"])

    @get("/openapi/openapi.json", include_in_schema=False, sync_to_thread=False)
    def openapi() -> dict[str, Any]:
        return spec

    @get("/metrics", include_in_schema=False)
    async def metrics(state: State) -> Response[bytes]:
        return Response(await state.metrics.exposition(), media_type=METRICS_CONTENT_TYPE)

    pages: list[Any] = []
    if settings.ui:
        from poiesis.entrypoints import ui

        pages = [ui.router(principal=Provide(_principal), tasks=from_state("tasks")), ui.home]

    hosts = (
        LOOPBACK_NAMES | {h.lower() for h in settings.allowed_hosts} if is_loopback(settings.host) else None
    )
    guard = EdgeGuard(hosts=hosts, origins=frozenset(settings.cors_allow_origins))
    app = _MeasuredApp(
        route_handlers=[tes, healthz, readyz, openapi, *([metrics] if settings.metrics else []), *pages],
        middleware=[guard],
        dependencies={"store": from_state("store")},
        logging_config=None,
        lifespan=[lifespan],
        exception_handlers={
            PoiesisError: _domain_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        cors_config=CORSConfig(allow_origins=settings.cors_allow_origins)
        if settings.cors_allow_origins
        else None,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=None,
        debug=False,
    )
    app.state.edge = guard
    if not settings.cors_allow_origins:  # CORS answers are Litestar's to give
        app.state.hot = HotRoutes(app, BASE, max_body_bytes=settings.max_body_bytes)
    return app


def app_from_env() -> Litestar:
    """Factory for `uvicorn --factory` workers: settings from the environment."""
    from poiesis.entrypoints.logs import configure
    from poiesis.entrypoints.settings import load

    settings = load()
    configure(settings.log_level, settings.log_format)
    container = ApiContainer(settings=settings)
    return create_app(container)
