"""Group commit (`adapters.grouped`): every write is committed exactly once, its caller answered only
after that, and a failure lands on the writes it concerns."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poiesis.adapters.grouped import Grouped
from poiesis.adapters.postgres.errors import ConnectionLost
from poiesis.ports.store import StoreUnavailable


class FakeDatabase:
    """Commits items; an item named "bad" is refused, and a group holding one commits nothing."""

    def __init__(self, *, delay: float = 0.001, down: bool = False) -> None:
        self.delay = delay
        self.down = down
        self.committed: list[str] = []
        self.groups: list[list[str]] = []

    async def one(self, item: str) -> None:
        await self.many([item])

    async def many(self, items: Sequence[str]) -> None:
        self.groups.append(list(items))
        await asyncio.sleep(self.delay)
        if self.down:
            raise StoreUnavailable("database unavailable: down")
        if any(i.startswith("bad") for i in items):
            raise ValueError("a value refused")
        self.committed.extend(items)


async def test_a_write_alone_is_sent_at_once_as_one() -> None:
    db = FakeDatabase()
    calls: list[str] = []

    async def one(item: str) -> None:
        calls.append(item)
        await db.one(item)

    grouped = Grouped(one, db.many)
    await grouped("a")
    assert calls == ["a"]
    assert db.committed == ["a"]
    assert grouped.groups == 1


async def test_writes_arriving_together_share_groups_and_each_returns_after_its_commit() -> None:
    db = FakeDatabase(delay=0.005)
    grouped = Grouped(db.one, db.many, lanes=2, most=16)
    seen_committed: dict[str, bool] = {}

    async def write(item: str) -> None:
        await grouped(item)
        seen_committed[item] = item in db.committed

    items = [f"t{i}" for i in range(100)]
    await asyncio.gather(*(write(i) for i in items))
    assert sorted(db.committed) == sorted(items)  # each exactly once
    assert all(seen_committed.values())
    assert len(seen_committed) == 100
    assert len(db.groups) < 20  # grouped: 100 writes in far fewer statements
    assert max(len(g) for g in db.groups) <= 16


async def test_no_more_groups_in_flight_than_lanes() -> None:
    in_flight = 0
    most_in_flight = 0

    async def many(items: Sequence[str]) -> None:
        nonlocal in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        await asyncio.sleep(0.002)
        in_flight -= 1

    async def one(item: str) -> None:
        await many([item])

    grouped = Grouped(one, many, lanes=3)
    await asyncio.gather(*(grouped(str(i)) for i in range(200)))
    assert most_in_flight == 3


async def test_a_refused_write_fails_alone_and_the_rest_of_its_group_commits() -> None:
    db = FakeDatabase(delay=0.005)
    grouped = Grouped(db.one, db.many, lanes=1)
    items = [f"t{i}" for i in range(10)] + ["bad"] + [f"u{i}" for i in range(10)]
    results = await asyncio.gather(*(grouped(i) for i in items), return_exceptions=True)
    failed = [item for item, r in zip(items, results, strict=True) if isinstance(r, Exception)]
    assert failed == ["bad"]
    assert isinstance(results[items.index("bad")], ValueError)
    assert sorted(db.committed) == sorted(i for i in items if i != "bad")
    assert any(len(g) > 1 and "bad" in g for g in db.groups)  # it was in a group first


async def test_a_database_that_cannot_serve_fails_every_write_of_the_group_with_that() -> None:
    db = FakeDatabase(delay=0.005, down=True)
    grouped = Grouped(db.one, db.many, lanes=1)
    results = await asyncio.gather(*(grouped(str(i)) for i in range(20)), return_exceptions=True)
    assert all(isinstance(r, StoreUnavailable) for r in results)
    assert db.committed == []
    # nothing was sent one by one after the group failed: a retry is each caller's to decide
    assert sum(len(g) for g in db.groups) == 20


async def test_a_group_cut_off_under_its_statement_answers_connection_lost() -> None:
    started = asyncio.Event()

    async def many(items: Sequence[str]) -> None:
        started.set()
        await asyncio.sleep(10)

    async def one(item: str) -> None:
        await many([item])

    grouped = Grouped(one, many, lanes=1)
    leader = asyncio.ensure_future(grouped("lead"))
    await started.wait()
    started.clear()
    followers = [asyncio.ensure_future(grouped(str(i))) for i in range(5)]
    await asyncio.sleep(0)
    leader.cancel()
    # the followers' group goes next, led by the oldest; cut that one off too
    await asyncio.wait_for(started.wait(), 1)
    followers[0].cancel()
    results = await asyncio.gather(*followers, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert all(isinstance(r, ConnectionLost) for r in results[1:])
    with pytest.raises(asyncio.CancelledError):
        await leader


@settings(max_examples=60, deadline=None)
@given(
    plan=st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=3)), min_size=1, max_size=40),
    lanes=st.integers(min_value=1, max_value=4),
    most=st.integers(min_value=1, max_value=8),
)
def test_every_write_returns_if_and_only_if_it_committed_exactly_once(
    plan: list[tuple[bool, int]], lanes: int, most: int
) -> None:
    """Writes arriving at random moments, some refused: a call returns iff its item is committed,
    once; it raises iff its item is not committed."""

    async def run() -> None:
        db = FakeDatabase(delay=0.001)
        grouped = Grouped(db.one, db.many, lanes=lanes, most=most)

        async def write(i: int, bad: bool, after: int) -> tuple[str, BaseException | None]:
            item = f"bad{i}" if bad else f"t{i}"
            for _ in range(after):
                await asyncio.sleep(0)
            try:
                await grouped(item)
            except Exception as exc:  # noqa: BLE001 - the outcome is what is checked
                return item, exc
            return item, None

        results = await asyncio.gather(*(write(i, bad, after) for i, (bad, after) in enumerate(plan)))
        for item, error in results:
            assert (error is None) == (db.committed.count(item) == 1), (item, error, db.groups)
            assert db.committed.count(item) <= 1
        assert max(len(g) for g in db.groups) <= most

    asyncio.run(run())


async def test_callers_that_leave_while_waiting_are_not_sent_and_the_rest_commit() -> None:
    db = FakeDatabase(delay=0.005)
    grouped = Grouped(db.one, db.many, lanes=1)
    leader = asyncio.ensure_future(grouped("lead"))
    await asyncio.sleep(0)  # the leader's group is in flight
    waiting = {name: asyncio.ensure_future(grouped(name)) for name in ("a", "gone", "b", "c")}
    await asyncio.sleep(0)
    waiting["gone"].cancel()
    await leader
    results = await asyncio.gather(*waiting.values(), return_exceptions=True)
    assert isinstance(results[1], asyncio.CancelledError)
    assert [r for i, r in enumerate(results) if i != 1] == [None, None, None]
    assert sorted(db.committed) == ["a", "b", "c", "lead"]
    await grouped("after")  # the lane was freed
    assert db.committed[-1] == "after"
