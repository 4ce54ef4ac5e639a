"""The TaskStore contract (tests/contracts/store.py) run against SQLite and PostgreSQL, and what only a
database can show: the trigger-kept counts against a direct count, and the migration's backfill."""

from __future__ import annotations

import asyncio
import random

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from poiesis.adapters.sqlalchemy.store import SqlAlchemyTaskStore
from poiesis.domain.errors import Conflict
from poiesis.domain.states import State
from tests.builders import make_task
from tests.conftest import FakeClock
from tests.contracts.store import *  # noqa: F403 - the contract's tests, collected here
from tests.contracts.store import NOW


async def _counted_directly(store: SqlAlchemyTaskStore) -> dict[State, int]:
    import sqlalchemy as sa

    from poiesis.adapters.sqlalchemy import schema

    async with store._reader.connect() as conn:
        rows = await conn.execute(
            sa.select(schema.task.c.state, sa.func.count()).group_by(schema.task.c.state)
        )
        return {State(r[0]): int(r[1]) for r in rows}


async def test_the_state_counts_stay_exact_under_concurrent_writers(
    store: SqlAlchemyTaskStore, clock: FakeClock
) -> None:
    rng = random.Random(11)
    tasks = [make_task(clock) for _ in range(30)]
    targets = [s for s in State if s is not State.UNKNOWN]

    async def life(task_id: str) -> None:
        for target in rng.sample(targets, k=4):
            await store.transition(task_id, target, now=NOW)

    async def create_then_live(index: int) -> None:
        task = tasks[index]
        await store.create(task, owner="a", system_logs=[])
        with pytest.raises(Conflict):
            await store.create(task, owner="a", system_logs=[])  # refused: counted once
        await asyncio.gather(life(task.id), life(task.id))

    await asyncio.gather(*(create_then_live(i) for i in range(len(tasks))))
    counts = await store.count_by_state()
    assert sum(counts.values()) == len(tasks)
    assert counts == await _counted_directly(store)


async def test_the_migration_counts_the_tasks_stored_before_it(
    store: SqlAlchemyTaskStore, clock: FakeClock, engines: tuple[AsyncEngine, AsyncEngine]
) -> None:
    from alembic import command

    from poiesis.adapters.sqlalchemy.engine import alembic_config, migrate

    def downgrade(connection: object) -> None:
        command.downgrade(alembic_config(connection), "0001")  # type: ignore[arg-type]

    async with engines[0].begin() as conn:
        await conn.run_sync(downgrade)
    ids = []
    for _ in range(5):
        task = make_task(clock)
        await store.create(task, owner="a", system_logs=[])
        ids.append(task.id)
    for task_id in ids[:2]:
        await store.transition(task_id, State.RUNNING, now=NOW)
    await migrate(engines[0])
    assert await store.count_by_state() == {State.QUEUED: 3, State.RUNNING: 2}
    await store.transition(ids[0], State.COMPLETE, now=NOW)
    assert await store.count_by_state() == {State.QUEUED: 3, State.RUNNING: 1, State.COMPLETE: 1}
