"""The errors the domain raises. The API maps each class to one HTTP status in a single table.

PoiesisError
├── InvalidRequest      the client sent something unacceptable (400); names the field
│   └── InvalidTask     a submitted task broke a TES rule
├── TaskNotFound        no task with that id is visible to the caller (404)
└── Conflict            a request that cannot apply to the task as it is now (409)
"""

from __future__ import annotations


class PoiesisError(Exception):
    """Base of every error Poiesis raises on purpose."""


class InvalidRequest(PoiesisError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InvalidTask(InvalidRequest):
    pass


class TaskNotFound(PoiesisError):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id!r} not found")
        self.task_id = task_id


class Conflict(PoiesisError):
    pass


class Unavailable(PoiesisError):
    pass
