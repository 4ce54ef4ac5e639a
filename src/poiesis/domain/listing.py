"""ListTasks: the filter a client asks for, checked, and the page it gets back."""

from __future__ import annotations

import msgspec

from poiesis.domain.errors import InvalidRequest
from poiesis.domain.identity import decode_page_token
from poiesis.domain.states import State
from poiesis.domain.tes import Task, View

DEFAULT_PAGE_SIZE = 256
MAX_PAGE_SIZE = 2047  # "Must be less than 2048."
MAX_FILTER_CHARS = 1024
"""The longest `name_prefix`, tag key or tag value a filter may hold."""
MAX_TAG_FILTERS = 64


class TaskQuery(msgspec.Struct, kw_only=True, frozen=True):
    owner: str | None = None
    """Only this owner's tasks; None lists everyone's (auth off, or an admin)."""
    name_prefix: str | None = None
    state: State | None = None
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    """Tag filter: every key must be present; a non-empty value must match exactly."""
    after: str | None = None
    """The id of the last task already returned: the page holds older tasks only."""
    page_size: int = DEFAULT_PAGE_SIZE
    view: View = View.MINIMAL


class TaskPage(msgspec.Struct, kw_only=True, frozen=True):
    tasks: list[Task]
    next_after: str | None
    """The id to continue after, or None on the last page."""


class DocumentPage(msgspec.Struct, kw_only=True, frozen=True):
    """A page of tasks as their JSON documents in the view asked for."""

    documents: list[bytes]
    next_after: str | None


def tag_filter(keys: list[str], values: list[str]) -> dict[str, str]:
    """Zip `tag_key` and `tag_value` as the spec does: missing values mean "any value"."""
    if len(values) > len(keys):
        raise InvalidRequest("tag_value", "has more entries than tag_key")
    if len(keys) > MAX_TAG_FILTERS:
        raise InvalidRequest("tag_key", f"at most {MAX_TAG_FILTERS} tag filters are allowed")
    for name, items in (("tag_key", keys), ("tag_value", values)):
        _short(name, items)
    if any(not k for k in keys):
        raise InvalidRequest("tag_key", "must not be empty")
    padded = values + [""] * (len(keys) - len(values))
    return dict(zip(keys, padded, strict=True))


def build_query(
    *,
    owner: str | None,
    name_prefix: str | None,
    state: str | None,
    tag_keys: list[str],
    tag_values: list[str],
    page_size: int | None,
    page_token: str | None,
    view: str | None,
) -> TaskQuery:
    _short("name_prefix", [name_prefix or ""])
    if owner is not None:
        _short("owner", [owner])
    if page_size is None:
        size = DEFAULT_PAGE_SIZE
    elif page_size <= 0:
        raise InvalidRequest("page_size", f"must be positive, got {page_size}")
    else:
        size = min(page_size, MAX_PAGE_SIZE)
    return TaskQuery(
        owner=owner,
        name_prefix=name_prefix or None,
        state=parse_state(state) if state is not None else None,
        tags=tag_filter(tag_keys, tag_values),
        after=decode_page_token(page_token) if page_token else None,
        page_size=size,
        view=parse_view(view),
    )


def _short(field: str, values: list[str]) -> None:
    for value in values:
        if len(value) > MAX_FILTER_CHARS:
            raise InvalidRequest(field, f"must be at most {MAX_FILTER_CHARS} characters")
        if "\x00" in value:
            raise InvalidRequest(field, "must not contain a NUL character")


def parse_view(value: str | None) -> View:
    if value is None:
        return View.MINIMAL
    try:
        return View(value)
    except ValueError:
        raise InvalidRequest("view", f"must be one of MINIMAL, BASIC, FULL, got {value!r}") from None


def parse_state(value: str) -> State:
    try:
        return State(value)
    except ValueError:
        raise InvalidRequest("state", f"must be a tesState value, got {value!r}") from None
