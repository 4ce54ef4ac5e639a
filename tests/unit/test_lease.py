"""Leader election over a Lease: one leader at a time, takeover after the lease, no overlap."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poiesis.adapters.kubernetes.lease import Elector, LeaseRecord, LeaseTiming

TIMING = LeaseTiming(lease_seconds=15, renew_deadline_seconds=10, retry_seconds=2)


class FakeLeases:
    """One Lease with optimistic concurrency, as the apiserver keeps it."""

    def __init__(self) -> None:
        self.record: LeaseRecord | None = None
        self.version = 0

    async def get(self) -> LeaseRecord | None:
        return self.record

    async def create(self, record: LeaseRecord) -> bool:
        if self.record is not None:
            return False
        self._store(record)
        return True

    async def update(self, record: LeaseRecord) -> bool:
        if self.record is None or record.version != self.record.version:
            return False
        self._store(record)
        return True

    def _store(self, record: LeaseRecord) -> None:
        self.version += 1
        self.record = msgspec.structs.replace(record, version=str(self.version))


class Cut:
    """A replica's view of the Lease that can be cut off (a network partition)."""

    def __init__(self, leases: FakeLeases) -> None:
        self.leases = leases
        self.cut = False

    def _check(self) -> None:
        if self.cut:
            raise ConnectionError("unreachable")

    async def get(self) -> LeaseRecord | None:
        self._check()
        return await self.leases.get()

    async def create(self, record: LeaseRecord) -> bool:
        self._check()
        return await self.leases.create(record)

    async def update(self, record: LeaseRecord) -> bool:
        self._check()
        return await self.leases.update(record)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def electors(n: int) -> tuple[FakeLeases, Clock, list[Cut], list[Elector]]:
    leases, clock = FakeLeases(), Clock()
    views = [Cut(leases) for _ in range(n)]
    return (
        leases,
        clock,
        views,
        [Elector(v, f"tctl-{i}", TIMING, monotonic=clock, wall=clock) for i, v in enumerate(views)],
    )


async def test_one_takes_the_lease_and_keeps_it_while_it_renews() -> None:
    leases, clock, _, (a, b) = electors(2)
    assert await a.try_acquire_or_renew()
    for _ in range(20):
        clock.t += TIMING.retry_seconds
        assert await a.try_acquire_or_renew()
        assert not await b.try_acquire_or_renew()
    assert leases.record is not None
    assert leases.record.holder == "tctl-0"
    assert leases.record.transitions == 0


async def test_another_takes_over_only_after_the_lease_has_run_out_since_it_last_saw_a_change() -> None:
    leases, clock, _, (a, b) = electors(2)
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()  # b sees the Lease now
    clock.t += TIMING.lease_seconds - 0.5
    assert not await b.try_acquire_or_renew()
    clock.t += 0.5
    assert await b.try_acquire_or_renew()
    assert leases.record is not None
    assert (leases.record.holder, leases.record.transitions) == ("tctl-1", 1)
    assert not await a.try_acquire_or_renew(), "the old leader cannot renew a Lease it lost"


async def test_a_released_lease_is_taken_at_once() -> None:
    _, clock, _, (a, b) = electors(2)
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    await a.release()
    clock.t += 0.1
    assert await b.try_acquire_or_renew()


def test_timing_must_leave_room_between_renewing_and_taking_over() -> None:
    with pytest.raises(ValueError, match="renew_deadline_seconds < lease_seconds"):
        LeaseTiming(lease_seconds=10, renew_deadline_seconds=10, retry_seconds=2)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.floats(0.1, 6.0), st.booleans()),
        min_size=1,
        max_size=120,
    )
)
def test_no_two_replicas_ever_act_at_once(steps: list[tuple[int, float, bool]]) -> None:
    """Any interleaving of three replicas, with partitions coming and going: a replica acts from a
    successful acquire or renew until `renew_deadline` after its last one (as `Elector.run`
    does), and at no moment do two act."""

    async def scenario() -> None:
        _, clock, views, replicas = electors(3)
        renewed: list[float | None] = [None, None, None]
        for index, dt, cut in steps:
            clock.t += dt
            views[index].cut = cut
            ok = await replicas[index].try_acquire_or_renew()
            if ok:
                renewed[index] = clock.t
            elif renewed[index] is not None and (
                (observed := replicas[index]._observed) is not None
                and observed.holder not in (None, replicas[index].identity)
            ):
                renewed[index] = None  # it sees another holder: it stops at once
            acting = [
                i
                for i, r in enumerate(renewed)
                if r is not None and clock.t - r < TIMING.renew_deadline_seconds
            ]
            assert len(acting) <= 1, f"replicas {acting} act at once at t={clock.t}"

    asyncio.run(scenario())
