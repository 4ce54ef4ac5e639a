"""Fair use of a shared backend: caps on the tasks in flight, the fair order in which held tasks
are released, and a per-user rate of creates.

A task over a cap is not refused: it is held (QUEUED) and released when its turn comes. The turn
goes to the owner with the fewest tasks in flight (counting those released in the same pass), the
oldest waiting task first among equals: max-min fairness, so one user's flood of thousands of tasks
takes the slots only while nobody else waits. Within an owner the oldest task goes first.

Creates are paced per owner by a token bucket: `burst` at once, then `rate` per second. A create
past it is refused (TooManyRequests: 429 with the seconds to wait), so one client's loop cannot
fill the database.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping

import msgspec

from poiesis.domain.errors import TooManyRequests


class Caps(msgspec.Struct, frozen=True, kw_only=True):
    """Tasks in flight at once: per owner and in all; None is no cap."""

    per_owner: int | None = None
    total: int | None = None

    @property
    def any(self) -> bool:
        return self.per_owner is not None or self.total is not None


def release_order(active: Mapping[str, int], waiting: Iterable[tuple[str, str]], caps: Caps) -> list[str]:
    """The waiting tasks to release now, in order.

    `active`: each owner's tasks in flight; `waiting`: (task id, owner) of the held tasks, oldest
    first. A task is released while neither cap is reached; among owners with a task waiting the
    one with the fewest in flight goes next, the one whose next task is oldest among equals."""
    room = math.inf if caps.total is None else caps.total - sum(active.values())
    if room <= 0:
        return []
    per_owner = math.inf if caps.per_owner is None else caps.per_owner
    queues: dict[str, list[tuple[int, str]]] = {}
    for position, (task_id, owner) in enumerate(waiting):
        queues.setdefault(owner, []).append((position, task_id))
    # (in flight, position of the owner's next task, owner, index into its queue)
    turns = [
        (active.get(owner, 0), queue[0][0], owner, 0)
        for owner, queue in queues.items()
        if active.get(owner, 0) < per_owner
    ]
    heapq.heapify(turns)
    released: list[str] = []
    while turns and len(released) < room:
        count, _, owner, index = heapq.heappop(turns)
        queue = queues[owner]
        released.append(queue[index][1])
        index += 1
        if index < len(queue) and count + 1 < per_owner:
            heapq.heappush(turns, (count + 1, queue[index][0], owner, index))
    return released


def held_note(caps: Caps, total: str = "max_active_tasks") -> str:
    """The `system_logs` line of a task held by the caps, so its FULL view says why it waits;
    `total`: the setting that holds the total cap."""
    named = [
        f"{name} = {value}"
        for name, value in (("max_active_tasks_per_user", caps.per_owner), (total, caps.total))
        if value is not None
    ]
    return (
        f"waiting: the caps on tasks in flight are reached ({', '.join(named)}); "
        "held tasks go in fair order as slots free"
    )


class CreateRate:
    """A token bucket per owner: `burst` creates at once, refilled at `rate` per second. Owners
    not seen for long are forgotten (at most `owners` kept), which costs them nothing: a full
    bucket is what a new owner gets."""

    def __init__(self, rate: float, burst: int, *, owners: int = 10_000) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._owners = owners
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, owner: str, now: float) -> None:
        """Count one create of `owner` at `now` (monotonic seconds); TooManyRequests when there is no
        token left, with the seconds until there is one."""
        if not self.enabled:
            return
        tokens, then = self._buckets.pop(owner, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        if tokens < 1.0:
            self._buckets[owner] = (tokens, now)
            raise TooManyRequests((1.0 - tokens) / self.rate)
        self._buckets[owner] = (tokens - 1.0, now)
        while len(self._buckets) > self._owners:
            self._buckets.popitem(last=False)
