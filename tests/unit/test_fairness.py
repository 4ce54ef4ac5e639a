"""Fair release of held tasks and the per-owner create rate (domain.fairness)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poiesis.adapters.local.gate import FairGate
from poiesis.domain.errors import TooManyRequests
from poiesis.domain.fairness import Caps, CreateRate, release_order

OWNERS = st.sampled_from(["ann", "bob", "cy", "dee"])


@st.composite
def situations(draw: st.DrawFn) -> tuple[dict[str, int], list[tuple[str, str]], Caps]:
    active = draw(st.dictionaries(OWNERS, st.integers(0, 6)))
    owners = draw(st.lists(OWNERS, max_size=40))
    waiting = [(f"t{i:03d}", owner) for i, owner in enumerate(owners)]
    caps = Caps(
        per_owner=draw(st.none() | st.integers(1, 8)),
        total=draw(st.none() | st.integers(0, 30)),
    )
    return active, waiting, caps


@given(situations())
def test_no_cap_is_ever_exceeded(situation: tuple[dict[str, int], list[tuple[str, str]], Caps]) -> None:
    active, waiting, caps = situation
    released = release_order(active, waiting, caps)
    owner_of = dict(waiting)
    after = Counter(active) + Counter(owner_of[t] for t in released)
    if caps.per_owner is not None:
        for owner in {owner_of[t] for t in released}:
            assert after[owner] <= caps.per_owner
    if caps.total is not None and released:
        assert sum(after.values()) <= caps.total


@given(situations())
def test_a_slot_left_free_has_nobody_to_take_it(
    situation: tuple[dict[str, int], list[tuple[str, str]], Caps],
) -> None:
    active, waiting, caps = situation
    released = set(release_order(active, waiting, caps))
    owner_of = dict(waiting)
    after = Counter(active) + Counter(owner_of[t] for t in released)
    total_full = caps.total is not None and sum(after.values()) >= caps.total
    for task_id, owner in waiting:
        if task_id not in released:
            owner_full = caps.per_owner is not None and after[owner] >= caps.per_owner
            assert owner_full or total_full, f"{task_id} of {owner} could have run"


@given(situations())
def test_each_owner_goes_oldest_first(situation: tuple[dict[str, int], list[tuple[str, str]], Caps]) -> None:
    active, waiting, caps = situation
    released = release_order(active, waiting, caps)
    for owner in {o for _, o in waiting}:
        mine = [t for t, o in waiting if o == owner]
        got = [t for t in released if dict(waiting)[t] == owner]
        assert got == mine[: len(got)]


@given(situations())
def test_nobody_gets_ahead_of_someone_still_waiting(
    situation: tuple[dict[str, int], list[tuple[str, str]], Caps],
) -> None:
    """Max-min fairness: an owner who got a slot ends with at most one more in flight than any
    owner left waiting below the per-owner cap."""
    active, waiting, caps = situation
    released = release_order(active, waiting, caps)
    owner_of = dict(waiting)
    after = Counter(active) + Counter(owner_of[t] for t in released)
    served = {owner_of[t] for t in released}
    left = {o for t, o in waiting if t not in set(released)}
    for waiter in left:
        if caps.per_owner is not None and after[waiter] >= caps.per_owner:
            continue
        for owner in served:
            assert after[owner] <= after[waiter] + 1


def test_a_flood_and_a_small_user_share_the_slots() -> None:
    flood = [(f"a{i:04d}", "flooder") for i in range(300)]
    small = [(f"b{i:04d}", "small") for i in range(5)]
    waiting = sorted(flood + small)  # the flooder's tasks are all older
    released = release_order({"flooder": 0}, waiting, Caps(total=4))
    assert Counter(t[0] for t in released) == {"a": 2, "b": 2}
    # With the flooder's slots all taken, the small user's tasks go first when a slot frees.
    assert release_order({"flooder": 3, "small": 0}, waiting, Caps(total=4)) == ["b0000"]


def test_the_total_cap_already_reached_releases_nothing() -> None:
    assert release_order({"ann": 5}, [("t1", "bob")], Caps(total=5)) == []
    assert release_order({}, [("t1", "bob")], Caps()) == ["t1"]


def test_the_create_rate_refills() -> None:
    rate = CreateRate(rate=2.0, burst=3)
    for _ in range(3):
        rate.take("ann", 100.0)
    with pytest.raises(TooManyRequests) as refused:
        rate.take("ann", 100.0)
    assert refused.value.retry_after == 1  # half a second, in the header's whole seconds
    rate.take("bob", 100.0)  # another owner has a bucket of its own
    rate.take("ann", 100.5)  # one token back after half a second
    with pytest.raises(TooManyRequests):
        rate.take("ann", 100.5)
    rate.take("ann", 110.0)  # refilled, but never past the burst
    rate.take("ann", 110.0)
    rate.take("ann", 110.0)
    with pytest.raises(TooManyRequests):
        rate.take("ann", 110.0)


def test_the_create_rate_forgets_idle_owners_without_favouring_them() -> None:
    rate = CreateRate(rate=1.0, burst=1, owners=2)
    rate.take("ann", 0.0)
    rate.take("bob", 0.0)
    rate.take("cy", 0.0)  # ann is forgotten: she comes back with a full bucket, as after a wait
    assert len(rate._buckets) == 2
    rate.take("ann", 0.0)
    with pytest.raises(TooManyRequests):
        rate.take("cy", 0.0)


def test_a_zero_rate_is_off() -> None:
    rate = CreateRate(rate=0.0, burst=1)
    for _ in range(100):
        rate.take("ann", 0.0)


async def _hold(gate: FairGate, task_id: str, owner: str, order: list[str], go: asyncio.Event) -> None:
    async with gate.slot(task_id, owner):
        order.append(task_id)
        await go.wait()


async def test_the_local_gate_lets_tasks_in_fairly_and_a_cancelled_waiter_leaves() -> None:
    gate = FairGate(Caps(per_owner=2, total=3))
    order: list[str] = []
    done = {t: asyncio.Event() for t in ("a1", "a2", "a3", "a4", "b1", "b2")}
    runs = {}
    for task_id in ("a1", "a2", "a3", "a4"):  # the flooder's, all older
        runs[task_id] = asyncio.create_task(_hold(gate, task_id, "flooder", order, done[task_id]))
    await asyncio.sleep(0)
    assert order == ["a1", "a2"]
    assert gate.waiting == 2
    for task_id in ("b1", "b2"):
        runs[task_id] = asyncio.create_task(_hold(gate, task_id, "small", order, done[task_id]))
    await asyncio.sleep(0)
    assert order == ["a1", "a2", "b1"]
    assert gate.in_flight == 3
    runs["a3"].cancel()  # a waiter cancelled leaves without a slot
    await asyncio.sleep(0)
    assert gate.waiting == 2
    assert gate.in_flight == 3
    done["a1"].set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    # Each has one in flight: the older of their next tasks goes first.
    assert order[-1] == "a4"
    done["b1"].set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert order[-1] == "b2"
    for event in done.values():
        event.set()
    await asyncio.gather(*runs.values(), return_exceptions=True)
    assert gate.in_flight == 0
    assert gate.waiting == 0


async def test_a_task_cancelled_as_it_is_let_in_gives_its_slot_back() -> None:
    gate = FairGate(Caps(total=1))
    never = asyncio.Event()
    order: list[str] = []
    second: asyncio.Task[None] | None = None

    async def first() -> None:
        async with gate.slot("t1", "ann"):
            order.append("t1")
            await asyncio.sleep(0)
        # t2 has just been let in and has not run yet: cancel it now.
        assert second is not None
        assert gate.waiting == 0
        second.cancel()

    one = asyncio.create_task(first())
    second = asyncio.create_task(_hold(gate, "t2", "ann", order, never))
    await asyncio.gather(one, second, return_exceptions=True)
    assert second.cancelled()
    assert gate.in_flight == 0
    never.set()
    await _hold(gate, "t3", "ann", order, never)
    assert order == ["t1", "t3"]
