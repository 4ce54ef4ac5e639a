"""The TES use cases behind the REST API: create, get, list and cancel a task.

Create counts against its owner's create rate first (a create past it is refused, 429, before
anything is read or stored). It commits the task before it hands it to the cluster. If the cluster
cannot take it now, the task stays QUEUED (the Task Controller submits it again later), so an
accepted task is never lost and the client never sees an error for a task that was stored.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from datetime import datetime
from typing import cast

import msgspec

from poiesis.domain.errors import InvalidRequest, TaskNotFound, TooManyRequests
from poiesis.domain.fairness import CreateRate
from poiesis.domain.idempotency import key
from poiesis.domain.identity import encode_page_token, is_task_id, new_task_id
from poiesis.domain.listing import TaskQuery
from poiesis.domain.states import State, is_terminal
from poiesis.domain.submission import Accepted, NewTask, Rules, accept
from poiesis.domain.tes import ListTasksResponse, Task, TaskMinimal, View
from poiesis.domain.times import rfc3339
from poiesis.domain.views import render
from poiesis.ports.clock import Clock
from poiesis.ports.cluster import Cluster, ClusterRefused, ClusterUnavailable
from poiesis.ports.store import TaskStore

log = logging.getLogger(__name__)

_LARGE_BODY = 64 * 1024
_AT = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`")


def decode_task(body: bytes) -> NewTask:
    """Decode a CreateTask body; errors name the field at fault in the spec's dotted form."""
    try:
        return msgspec.json.decode(body, type=NewTask)
    except msgspec.ValidationError as exc:
        message = str(exc)
        at = _AT.search(message)
        path = at.group("path").replace("[...]", "") if at else ""  # "[...]" is msgspec's map value
        message = _AT.sub("", message)
        missing = _MISSING.match(message)
        if missing:
            path = f"{path}.{missing.group('name')}" if path else missing.group("name")
        raise InvalidRequest(path or "body", message) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest("body", f"is not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:
        raise InvalidRequest("body", f"is not valid UTF-8 (byte {exc.start})") from None
    except RecursionError:
        raise InvalidRequest("body", "is nested too deeply") from None


def _known(task_id: str) -> str:
    """`task_id` if it is the form of a task id; else no task has it (TaskNotFound), and the store
    is not asked (PostgreSQL refuses text holding a NUL byte)."""
    if not is_task_id(task_id):
        raise TaskNotFound(task_id)
    return task_id


class TaskService:
    def __init__(
        self,
        *,
        store: TaskStore,
        cluster: Cluster,
        clock: Clock,
        rules: Rules,
        rate: CreateRate | None = None,
        on_rate_limited: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._cluster = cluster
        self._clock = clock
        self._rules = rules
        self._rate = rate if rate is not None and rate.enabled else None
        self._on_rate_limited = on_rate_limited

    async def create(self, body: bytes, *, owner: str, idempotency_key: str | None = None) -> str:
        """Accept and store the task, then hand it to the cluster; its id. With an idempotency key
        already used by this owner, the id of the task that key made (nothing new)."""
        given = key(idempotency_key, body)
        if self._rate is not None:
            try:
                self._rate.take(owner, self._clock.monotonic())
            except TooManyRequests:
                if self._on_rate_limited is not None:
                    self._on_rate_limited()
                raise
        now = self._clock.now()
        if len(body) > _LARGE_BODY:
            # Decoding and checking a large task takes long enough to be felt by every other request.
            accepted = await asyncio.to_thread(self._accept, body, now, owner)
        else:
            accepted = self._accept(body, now, owner)
        if given is None:
            await self._store.create(accepted.task, owner=owner, system_logs=accepted.warnings)
        else:
            first = await self._store.create_once(
                accepted.task, owner=owner, system_logs=accepted.warnings, key=given
            )
            if first != accepted.task.id:
                log.info("task %s: a retried create (Idempotency-Key) of %s", first, owner)
                return first
        try:
            # As the store gives it back (tctl submits from there): with its owner.
            await self._cluster.submit(msgspec.structs.replace(accepted.task, owner=owner))
        except ClusterUnavailable as exc:
            log.warning("task %s stays QUEUED: cluster unavailable: %s", accepted.task.id, exc)
        except ClusterRefused as exc:
            log.warning("task %s: the cluster refused it: %s", accepted.task.id, exc)
            await self._store.transition(
                accepted.task.id, State.SYSTEM_ERROR, now=self._clock.now(), reason=str(exc)
            )
        return accepted.task.id

    def _accept(self, body: bytes, now: datetime, owner: str) -> Accepted:
        return accept(
            decode_task(body),
            task_id=new_task_id(now),
            creation_time=rfc3339(now),
            rules=self._rules,
            owner=owner,
        )

    async def get(self, task_id: str, *, view: View, owner: str | None) -> Task | TaskMinimal:
        return render(await self._store.get(_known(task_id), view=view, owner=owner), view)

    async def list_tasks(self, query: TaskQuery) -> ListTasksResponse:
        page = await self._store.list_tasks(query)
        tasks = [cast(Task, render(task, query.view)) for task in page.tasks]
        token = encode_page_token(page.next_after) if page.next_after else None
        return ListTasksResponse(tasks=tasks, next_page_token=token)

    async def document(self, task_id: str, *, view: View, owner: str | None) -> bytes:
        """GetTask's response body: the task in `view`, as JSON."""
        return await self._store.document(_known(task_id), view=view, owner=owner)

    async def page(self, query: TaskQuery) -> bytes:
        """ListTasks' response body, as JSON: the documents as the store gives them, joined."""
        page = await self._store.documents(query)
        body = b'{"tasks":[' + b",".join(page.documents) + b"]"
        if page.next_after:
            body += b',"next_page_token":' + msgspec.json.encode(encode_page_token(page.next_after))
        return body + b"}"

    async def counts(self, *, owner: str | None) -> dict[State, int]:
        """Tasks by state: every owner's (None) or one owner's."""
        return await self._store.count_by_state(owner=owner)

    async def cancel(self, task_id: str, *, owner: str | None) -> None:
        """CANCELING at once; CANCELED once the cluster holds nothing of the task. A task already
        in a terminal state is left as it is (cancel is idempotent)."""
        state = await self._store.state(_known(task_id), owner=owner)
        if is_terminal(state):
            return
        await self._store.transition(task_id, State.CANCELING, now=self._clock.now())
        try:
            gone = await self._cluster.cancel(task_id)
        except ClusterUnavailable as exc:
            log.warning("task %s stays CANCELING: cluster unavailable: %s", task_id, exc)
            return
        if gone:
            await self._store.transition(task_id, State.CANCELED, now=self._clock.now())
