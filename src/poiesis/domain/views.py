"""The three TES views of a task, exactly as the spec defines them.

MINIMAL: only `id` and `state`. BASIC: everything except executor stdout/stderr, input `content`
and `system_logs`. FULL: everything, and the task's owner as `owner` in the first task log's
`metadata` (a task log is added for it when there is none yet; TES clients reject unknown fields,
so the owner cannot be a field of its own). Executor logs without an exit code (an executor still running)
never reach a task at all, so every view is valid against the schema.
"""

from __future__ import annotations

import msgspec
from msgspec.structs import replace

from poiesis.domain.listing import DocumentPage, TaskPage
from poiesis.domain.principal import OWNER_KEY
from poiesis.domain.tes import Task, TaskLog, TaskMinimal, View


def _basic_log(log: TaskLog) -> TaskLog:
    return replace(
        log,
        system_logs=None,
        logs=[replace(e, stdout=None, stderr=None) for e in log.logs],
    )


def encoded(task: Task, view: View) -> bytes:
    """The task's document in `view`, as JSON."""
    return msgspec.json.encode(render(task, view))


def encoded_page(page: TaskPage, view: View) -> DocumentPage:
    """A page's tasks as their documents in `view`."""
    return DocumentPage(documents=[encoded(task, view) for task in page.tasks], next_after=page.next_after)


def render(task: Task, view: View) -> Task | TaskMinimal:
    if view is View.MINIMAL:
        return TaskMinimal(id=task.id, state=task.state)
    if view is View.FULL:
        if task.owner is None:
            return task
        logs = task.logs or [TaskLog(logs=[], outputs=[])]
        first = replace(logs[0], metadata=(logs[0].metadata or {}) | {OWNER_KEY: task.owner})
        return replace(task, owner=None, logs=[first, *logs[1:]])
    return replace(
        task,
        owner=None,
        inputs=[replace(i, content=None) for i in task.inputs] if task.inputs else None,
        logs=[_basic_log(log) for log in task.logs] if task.logs else None,
    )
