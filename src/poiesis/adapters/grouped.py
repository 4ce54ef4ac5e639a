"""Group commit: concurrent writes that arrive while others are being committed go to the database
together, in one statement and one commit, and each caller is answered only once its group has
committed.

No timer: a write that finds a lane free is sent at once (an idle server adds no latency), and the
writes that arrive meanwhile wait for the next group. The caller that opens a lane leads it: it
sends the groups (so the statement runs under its own request, traced there) until its own write
has committed, then hands the lane to the oldest write still waiting.

A group that fails as a whole for a reason that is one of its writes' (a unique key taken, a value
refused) committed nothing: each of its writes is then sent alone, and only the faulty one fails.
A group that the database could not serve (StoreUnavailable, ConnectionLost: it may or may not have
committed) fails every write in it with that error, for each caller to handle as it would its own.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from poiesis.adapters.postgres.errors import ConnectionLost
from poiesis.ports.store import StoreUnavailable

T = TypeVar("T")
log = logging.getLogger(__name__)

_LEAD = "lead"  # the lane is handed to this write: it leads next
_ALONE = "alone"  # its group failed on one write's account: this write is sent on its own


class Grouped(Generic[T]):
    def __init__(
        self,
        one: Callable[[T], Awaitable[None]],
        many: Callable[[Sequence[T]], Awaitable[None]],
        *,
        lanes: int = 1,
        most: int = 64,
        name: str = "write",
    ) -> None:
        """`one` writes one item, `many` a group in one transaction; at most `lanes` groups are
        in flight at once, each of at most `most` items. `name` names the writes in the log."""
        if lanes < 1 or most < 1:
            raise ValueError("lanes and most must be at least 1")
        self._one = one
        self._many = many
        self._lanes = lanes
        self._most = most
        self._name = name
        self._busy = 0
        self._waiting: collections.deque[tuple[T, asyncio.Future[str | None]]] = collections.deque()
        self.groups = 0
        """Groups sent so far (of any size), for the benchmarks and tests."""
        self.split = 0
        """Groups that failed on one write's account and were sent again one write at a time."""

    def _enqueue(self, item: T, *, first: bool = False) -> asyncio.Future[str | None]:
        done: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        (self._waiting.appendleft if first else self._waiting.append)((item, done))
        return done

    async def __call__(self, item: T) -> None:
        done = self._enqueue(item)
        if self._busy < self._lanes:
            self._busy += 1
            await self._leading(done)
        else:
            try:
                handed = await done == _LEAD
            except asyncio.CancelledError:
                # A caller that leaves while waiting is not sent (its future is cancelled, and
                # groups skip it); one handed the lane just before passes it on.
                if (
                    done.done()
                    and not done.cancelled()
                    and done.exception() is None
                    and done.result() == _LEAD
                ):
                    self._release()
                raise
            if handed:
                done = self._enqueue(item, first=True)
                await self._leading(done)
        if await done == _ALONE:
            await self._one(item)

    async def _leading(self, done: asyncio.Future[str | None]) -> None:
        try:
            await self._lead(done)
        except asyncio.CancelledError:
            if done.done() and not done.cancelled():
                done.exception()  # seen: this caller leaves with its cancel instead
            raise

    async def _lead(self, done: asyncio.Future[str | None]) -> None:
        try:
            while not done.done() and self._waiting:
                group: list[tuple[T, asyncio.Future[str | None]]] = []
                while self._waiting and len(group) < self._most:
                    entry = self._waiting.popleft()
                    if not entry[1].done():
                        group.append(entry)
                if group:
                    await self._commit(group)
        finally:
            self._release()

    def _release(self) -> None:
        """The lane passes to the oldest write still waiting (self._busy unchanged), or is freed."""
        while self._waiting:
            _, next_leader = self._waiting.popleft()
            if not next_leader.done():
                next_leader.set_result(_LEAD)
                return
        self._busy -= 1

    async def _commit(self, group: list[tuple[T, asyncio.Future[str | None]]]) -> None:
        self.groups += 1
        try:
            if len(group) == 1:
                await self._one(group[0][0])
            else:
                await self._many([item for item, _ in group])
        except Exception as exc:  # noqa: BLE001 - every failure of a group is its writes' to see
            alone = len(group) > 1 and not isinstance(exc, StoreUnavailable)
            if alone:
                self.split += 1
                log.info("a group of %d %ss failed (%s): each goes alone", len(group), self._name, exc)
            for _, done in group:
                if done.done():  # its caller has left
                    continue
                if alone:
                    done.set_result(_ALONE)
                else:
                    done.set_exception(exc)
        except BaseException:
            # Cancelled under the statement: whether it committed is not known, as after a lost
            # connection; each write's caller tries once more and a Conflict then means "done".
            for _, done in group:
                if not done.done():
                    done.set_exception(ConnectionLost("the write was interrupted before its answer"))
            raise
        else:
            for _, done in group:
                if not done.done():
                    done.set_result(None)
