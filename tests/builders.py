"""Small builders for tasks, so that tests say only what matters to them."""

from __future__ import annotations

from typing import Any

from poiesis.domain.identity import new_task_id
from poiesis.domain.submission import NewTask, Rules, accept
from poiesis.domain.tes import Executor, Task
from poiesis.domain.times import rfc3339
from tests.conftest import FakeClock


def make_executor(i: int = 0, **fields: Any) -> Executor:
    return Executor(
        image=fields.pop("image", "alpine"), command=fields.pop("command", ["echo", str(i)]), **fields
    )


def make_task(clock: FakeClock, *, executors: int = 1, advance: bool = True, **fields: Any) -> Task:
    """A valid, accepted task; each call moves the clock so ids and creation times increase."""
    if advance:
        clock.advance(0.001)
    new = NewTask(executors=[make_executor(i) for i in range(executors)], **fields)
    now = clock.now()
    return accept(
        new,
        task_id=new_task_id(now),
        creation_time=rfc3339(now),
        rules=Rules(),
    ).task
