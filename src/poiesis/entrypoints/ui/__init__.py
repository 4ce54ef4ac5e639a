"""The web dashboard at `/ui`: server-rendered pages over the same TaskService and principal as the
TES API, so a page shows exactly what that user's API calls would return, never more.

Pages are Jinja2 templates with autoescaping (task names, tags, logs and URLs are the submitter's
text); one small script (`static/ui.js`) replaces the live parts of a page while tasks run and sends
the cancel, as a same-origin JSON POST that the API's front door accepts like any other. Every
answer forbids inline scripts, framing and caching (`_HEADERS`). Credentials are the API's: a
browser sends basic credentials itself once asked; bearer tokens come from an authenticating proxy
in front that sets the `Authorization` header.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import OrderedDict
from importlib import resources
from typing import Annotated, Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined
from litestar import Request, Response, Router, get
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import FromPath, FromQuery, QueryParameter, SkipValidation
from litestar.response import Redirect

from poiesis.domain.errors import InvalidRequest, PoiesisError, TaskNotFound, Unauthenticated
from poiesis.domain.listing import build_query
from poiesis.domain.principal import Principal, listing_owner, owner_scope
from poiesis.domain.states import TERMINAL, State
from poiesis.domain.tes import Task, View
from poiesis.domain.times import parse_time
from poiesis.services.tasks import TaskService

log = logging.getLogger(__name__)

PREFIX = "/ui"
LIVE_MS = 2000
"""How often a page's live part is fetched again while something on it is still running."""
TAIL_CHARS = 4096
"""How much of an executor's stdout/stderr a task page shows (the end of it)."""
PAGE_SIZES = (10, 25, 50, 100)

_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_STATIC = {"ui.js": "text/javascript", "ui.css": "text/css"}
_ORDER = [s for s in State if s is not State.UNKNOWN]


def _templates() -> Environment:
    env = Environment(
        loader=PackageLoader("poiesis.entrypoints.ui", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(prefix=PREFIX, live_ms=LIVE_MS)
    env.filters.update(size=_size, duration=_duration, tail=_tail)
    return env


def _page(template: str, code: int = 200, **context: Any) -> Response[str]:
    html = _ENV.get_template(template).render(**context)
    return Response(html, status_code=code, media_type="text/html", headers=_HEADERS)


def _size(value: str | int | None) -> str:
    try:
        n = int(value or 0)
    except ValueError:
        return str(value)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(value)


def _time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return parse_time(value)
    except ValueError:
        return None


def _duration(start: str | None, end: str | None = None) -> str:
    began, ended = _time(start), _time(end) or dt.datetime.now(dt.UTC)
    if began is None:
        return ""
    seconds = max(0.0, (ended - began).total_seconds())
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"


def _tail(text: str | None) -> str:
    text = text or ""
    return text if len(text) <= TAIL_CHARS else "\u2026" + text[-TAIL_CHARS:]


_ENV = _templates()


def _error_page(request: Request[Any, Any, Any], exc: Exception) -> Response[str]:
    from poiesis.entrypoints.api import status_of

    status = status_of(exc)
    if status >= 500:
        log.exception("dashboard error", exc_info=exc)
    response = _page(
        "error.html",
        status,
        status=status,
        message=_message(exc),
        field=exc.field if isinstance(exc, InvalidRequest) else None,
        principal=None,
    )
    if isinstance(exc, Unauthenticated):
        access = request.app.state.access
        response.headers["WWW-Authenticate"] = access.challenges(
            refused=bool(request.headers.get("authorization"))
        )
    return response


def _message(exc: Exception) -> str:
    if isinstance(exc, PoiesisError):
        return str(exc)
    if isinstance(exc, HTTPException):
        return str(exc.detail)
    return "internal error"


class _CountsCache:
    """Counts by state per owner, read at most once per `seconds`: a page open on a long run polls
    every LIVE_MS, and one owner's counts cost in proportion to that owner's tasks."""

    def __init__(self, seconds: float, size: int) -> None:
        self._seconds = seconds
        self._size = size
        self._kept: OrderedDict[str | None, tuple[float, dict[State, int]]] = OrderedDict()

    async def get(self, tasks: TaskService, owner: str | None) -> dict[State, int]:
        now = time.monotonic()
        kept = self._kept.get(owner)
        if kept is not None and now - kept[0] < self._seconds:
            return kept[1]
        return await self.read(tasks, owner)

    async def read(self, tasks: TaskService, owner: str | None) -> dict[State, int]:
        counts = await tasks.counts(owner=owner)
        self._kept[owner] = (time.monotonic(), counts)
        self._kept.move_to_end(owner)
        while len(self._kept) > self._size:
            self._kept.popitem(last=False)
        return counts


_COUNTS = _CountsCache(seconds=5.0, size=1024)


class Filters:
    """The list page's query, as the form shows it and as links carry it on."""

    def __init__(
        self,
        *,
        name_prefix: str | None,
        state: str | None,
        tag_keys: list[str],
        tag_values: list[str],
        owner: str | None,
        page_size: int | None,
    ) -> None:
        self.name_prefix = name_prefix or None
        self.state = state or None
        pairs = list(zip(tag_keys, tag_values + [""] * (len(tag_keys) - len(tag_values)), strict=False))
        self.tags = [(k, v) for k, v in pairs if k]
        self.owner = owner or None
        self.page_size = page_size or PAGE_SIZES[1]

    def params(self, **changes: Any) -> list[tuple[str, str]]:
        values: dict[str, Any] = {
            "name_prefix": self.name_prefix,
            "state": self.state,
            "owner": self.owner,
            "page_size": self.page_size,
        } | changes
        out = [(k, str(v)) for k, v in values.items() if v is not None and k != "tags"]
        for key, value in changes.get("tags", self.tags):
            out += [("tag_key", key), ("tag_value", value)]
        return out

    def url(self, path: str = "", **changes: Any) -> str:
        return f"{PREFIX}/{path}?{urlencode(self.params(**changes))}"


async def _listing(
    tasks: TaskService, principal: Principal, filters: Filters, page_token: str | None, *, polled: bool
) -> dict[str, Any]:
    query = build_query(
        owner=listing_owner(principal, filters.owner),
        name_prefix=filters.name_prefix,
        state=filters.state,
        tag_keys=[k for k, _ in filters.tags],
        tag_values=[v for _, v in filters.tags],
        page_size=filters.page_size,
        page_token=page_token,
        view="BASIC",
    )
    page = await tasks.list_tasks(query)
    # Of the tasks this user may list (everyone's for an admin), whatever the other filters.
    # A page loaded counts afresh; its live part, polled while tasks run, may be seconds behind.
    counts = await _COUNTS.get(tasks, query.owner) if polled else await _COUNTS.read(tasks, query.owner)
    live = any(t.state not in TERMINAL for t in page.tasks)
    return {
        "tasks": page.tasks,
        "next_page_token": page.next_page_token,
        "page_token": page_token,
        "counts": [(s, counts.get(s, 0)) for s in _ORDER],
        "total": sum(counts.values()),
        "filters": filters,
        "show_owner": principal.admin,
        "live": live,
    }


Owner = Annotated[str | None, QueryParameter(description="admins: only this owner's tasks")]
TagKeys = Annotated[list[str] | None, QueryParameter(name="tag_key")]
TagValues = Annotated[list[str] | None, QueryParameter(name="tag_value")]
StateFilter = Annotated[str | None, QueryParameter(name="state")]


def _filters(
    name_prefix: str | None,
    state: str | None,
    tag_key: list[str] | None,
    tag_value: list[str] | None,
    owner: str | None,
    page_size: str | None,
) -> Filters:
    size: int | None = None
    if page_size:
        try:
            size = int(page_size)
        except ValueError:
            raise InvalidRequest("page_size", f"must be a number, got {page_size[:40]!r}") from None
    return Filters(
        name_prefix=name_prefix,
        state=state,
        tag_keys=tag_key or [],
        tag_values=tag_value or [],
        owner=owner,
        page_size=size,
    )


@get(["/", "/parts/tasks"], include_in_schema=False)
async def task_list(
    request: Request[Any, Any, Any],
    tasks: NamedDependency[TaskService],
    principal: NamedDependency[SkipValidation[Principal]],
    name_prefix: FromQuery[str | None] = None,
    state_filter: StateFilter = None,
    tag_key: TagKeys = None,
    tag_value: TagValues = None,
    owner: Owner = None,
    page_size: FromQuery[str | None] = None,
    page_token: FromQuery[str | None] = None,
) -> Response[str]:
    """The task list page, or (at /parts/tasks) its live part alone."""
    filters = _filters(name_prefix, state_filter, tag_key, tag_value, owner, page_size)
    polled = request.url.path.endswith("/parts/tasks")
    listing = await _listing(tasks, principal, filters, page_token or None, polled=polled)
    if polled:
        return _page("_tasks.html", **listing)
    return _page("list.html", principal=principal, states=_ORDER, page_sizes=PAGE_SIZES, **listing)


def _task_context(task: Task) -> dict[str, Any]:
    attempt = task.logs[-1] if task.logs else None
    runs = attempt.logs if attempt else []
    return {
        "task": task,
        "attempt": attempt,
        # The task shows the executors that ended; the one after them runs while the task does.
        "executors": [(i, e, runs[i] if i < len(runs) else None) for i, e in enumerate(task.executors)],
        "running": len(runs) if task.state is State.RUNNING else None,
        "sizes": {o.url: o.size_bytes for o in (attempt.outputs if attempt else [])},
        "live": task.state not in TERMINAL,
        "resources": [
            (name, value)
            for name in (task.resources.__struct_fields__ if task.resources else ())
            if (value := getattr(task.resources, name)) is not None
        ],
    }


@get(["/tasks/{task_id:str}", "/parts/task/{task_id:str}"], include_in_schema=False)
async def task_page(
    request: Request[Any, Any, Any],
    tasks: NamedDependency[TaskService],
    principal: NamedDependency[SkipValidation[Principal]],
    task_id: FromPath[str],
) -> Response[str]:
    """A task's page, or (at /parts/task/{id}) its live part alone."""
    found = await tasks.get(task_id, view=View.FULL, owner=owner_scope(principal))
    if not isinstance(found, Task):  # pragma: no cover - FULL renders a whole task
        raise TaskNotFound(task_id)
    if request.url.path.startswith(f"{PREFIX}/parts/"):
        return _page("_task.html", **_task_context(found))
    return _page("task.html", principal=principal, **_task_context(found))


_ASSETS = {name: (resources.files(__package__) / "static" / name).read_bytes() for name in _STATIC}


@get("/static/{name:str}", include_in_schema=False, sync_to_thread=False)
def static(name: FromPath[str]) -> Response[bytes]:
    """The two assets, from memory: no path from the request ever reaches the file system."""
    body = _ASSETS.get(name)
    if body is None:
        raise NotFoundException(f"no such file: {name[:100]}")
    headers = {**_HEADERS, "Cache-Control": "public, max-age=300"}
    return Response(body, media_type=_STATIC[name], headers=headers)


@get("/", include_in_schema=False, sync_to_thread=False)
def home() -> Redirect:
    """The server's root leads a browser to the dashboard."""
    return Redirect(PREFIX + "/", status_code=303)


def router(principal: Provide, tasks: Provide) -> Router:
    return Router(
        path=PREFIX,
        route_handlers=[task_list, task_page, static],
        dependencies={"principal": principal, "tasks": tasks},
        # The same keys as the API's handlers, so these (the nearer layer) answer with pages.
        exception_handlers={PoiesisError: _error_page, HTTPException: _error_page, Exception: _error_page},
    )
