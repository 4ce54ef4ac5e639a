"""The errors the domain raises. The API maps each class to one HTTP status in a single table.

PoiesisError
├── InvalidRequest      the client sent something unacceptable (400); names the field
│   ├── InvalidTask     a submitted task broke a TES rule
│   └── KeyReused       an Idempotency-Key already used for another request (422)
├── Unauthenticated     no credential, or one that does not prove who the caller is (401)
├── Forbidden           the caller is known but may not do this (403)
├── TaskNotFound        no task with that id is visible to the caller (404)
├── Conflict            a request that cannot apply to the task as it is now (409)
├── UnsupportedMediaType a body that is not JSON where JSON is required (415)
├── TooManyRequests     the caller created tasks faster than its rate allows (429, Retry-After)
└── Unavailable         a dependency (database, identity provider, cluster) cannot answer now (503)
"""

from __future__ import annotations

import math


class PoiesisError(Exception):
    """Base of every error Poiesis raises on purpose."""


class InvalidRequest(PoiesisError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InvalidTask(InvalidRequest):
    pass


class KeyReused(InvalidRequest):
    def __init__(self, task_id: str) -> None:
        super().__init__(
            "Idempotency-Key",
            f"was already used by your request that created task {task_id}, with another body; "
            "a retry must send the same request",
        )
        self.task_id = task_id


class Unauthenticated(PoiesisError):
    """The request carries no credential, or one that proves nothing. The message says why in
    words a client can act on; it never repeats the credential."""


class Forbidden(PoiesisError):
    pass


class TaskNotFound(PoiesisError):
    def __init__(self, task_id: str) -> None:
        shown = task_id if len(task_id) <= 100 else task_id[:100] + "..."  # a hostile id is not echoed whole
        super().__init__(f"task {shown!r} not found")
        self.task_id = task_id


class Conflict(PoiesisError):
    pass


class UnsupportedMediaType(PoiesisError):
    pass


class TooManyRequests(PoiesisError):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many tasks created at once; retry after {max(1, math.ceil(retry_after))} s")
        self.retry_after = max(1, math.ceil(retry_after))
        """Whole seconds, as the Retry-After header gives them."""


class Unavailable(PoiesisError):
    pass
