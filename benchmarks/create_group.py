"""PostgreSQL's CPU per task created in groups (the group commit's), four ways, interleaved in one run.

    uv run python benchmarks/create_group.py [--group 16] [--rounds 40]

On a private, durable PostgreSQL, one connection per way (its backend's CPU read from /proc):
- per-task statements: the per-task create statement once per task in one `executemany` (one round
  trip, one transaction), counted by a row trigger (schema revision 0007): the store before;
- group statement, row trigger: the whole group in one statement (revision 0007);
- group statement, statement trigger: the same, counted once per statement (revision 0008), the
  tag indexes' new entries in GIN's pending list of 4 MB; the list merged at the end, on its connection,
  and the merge's CPU counted in;
- a pending list of 256 kB: the same with the tag indexes' list capped (revision 0009 on), merged
  by the create that fills it.
Each round creates `--group` tasks five times per way, in turns, so the four share the machine's
moments alike. The task is the versus benchmark's: 2 executors, 1 inline input, 1 output, 2 tags.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import msgspec  # noqa: E402

from poiesis.adapters.postgres.records import dsn  # noqa: E402
from poiesis.adapters.sqlalchemy.direct import Statement  # noqa: E402
from poiesis.adapters.sqlalchemy.engine import create_engine, migrate  # noqa: E402
from poiesis.adapters.sqlalchemy.rows import CREATE_POSTGRES, CREATE_POSTGRES_GROUP, children, task_row  # noqa: E402
from poiesis.adapters.sqlalchemy.store import _Create  # noqa: E402
from poiesis.domain.identity import new_task_id  # noqa: E402
from poiesis.domain.submission import NewInput, NewOutput, NewTask, Rules, accept  # noqa: E402
from poiesis.domain.tes import Executor, Task  # noqa: E402
from poiesis.domain.times import rfc3339  # noqa: E402
from tests.support import postgres  # noqa: E402

WAYS = (
    "per-task statements",
    "group statement, row trigger",
    "group statement, statement trigger",
    "the same, pending list of 256 kB",
)
REVISIONS = ("0007", "0007", "0008", "head")


def task() -> Task:
    now = datetime.now(UTC)
    new = NewTask(
        name="bench-task",
        tags={"project": "p1", "bench": ""},
        executors=[
            Executor(image="alpine", command=["echo", "hello"], stdout="/out/log"),
            Executor(image="alpine", command=["true"]),
        ],
        inputs=[NewInput(path="/in/a", content="hello")],
        outputs=[NewOutput(path="/out/log", url="s3://bucket/log")],
    )
    return accept(new, task_id=new_task_id(now), creation_time=rfc3339(now), rules=Rules()).task


def rows(task: Task) -> tuple[dict[str, Any], dict[str, Any]]:
    """A create's parameters as the store makes them: the per-task statement's and the group's member."""
    create = _Create(task_row(task, "anonymous", document=True), children(task), "taken")
    return create.params(), create.member()


def backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def database(url: str, revision: str) -> asyncpg.Connection:
    engine = create_engine(url)
    await migrate(engine, revision)
    await engine.dispose()
    return await asyncpg.connect(dsn(url))


async def run(base: str, group: int, rounds: int) -> None:
    admin = await asyncpg.connect(dsn(base))
    for revision in sorted(set(REVISIONS)):
        await admin.execute(f"CREATE DATABASE at{revision}")
    await admin.close()
    root = base.rsplit("/", 1)[0]
    for revision in sorted(set(REVISIONS)):
        await (await database(f"{root}/at{revision}", revision)).close()
    # A connection per way, so each backend's CPU is its way's alone.
    conns = {
        way: await asyncpg.connect(dsn(f"{root}/at{rev}")) for way, rev in zip(WAYS, REVISIONS, strict=True)
    }
    pids = {way: await c.fetchval("SELECT pg_backend_pid()") for way, c in conns.items()}
    one, many = Statement(CREATE_POSTGRES), Statement(CREATE_POSTGRES_GROUP)
    cpu = dict.fromkeys(WAYS, 0.0)
    wall = dict.fromkeys(WAYS, 0.0)
    tasks = dict.fromkeys(WAYS, 0)
    for turn in range(rounds):
        for way in WAYS[turn % len(WAYS) :] + WAYS[: turn % len(WAYS)]:
            conn = conns[way]
            c0, t0 = backend_cpu(pids[way]), time.perf_counter()
            for _ in range(5):
                made = [rows(task()) for _ in range(group)]
                if way == WAYS[0]:
                    await conn.executemany(one.sql, [one.args(p) for p, _ in made])
                else:
                    members = msgspec.json.encode([m for _, m in made]).decode()
                    await conn.execute(many.sql, *many.args({"tasks": members}))
            cpu[way] += backend_cpu(pids[way]) - c0
            wall[way] += time.perf_counter() - t0
            tasks[way] += 5 * group
    # The pending entries are merged some time by someone (a vacuum, or the create that finds the
    # list full): that work is the pending list's too.
    c0 = backend_cpu(pids[WAYS[2]])
    for index in ("ix_task_tag_values", "ix_task_tag_keys"):
        await conns[WAYS[2]].execute(f"SELECT gin_clean_pending_list('{index}'::regclass)")
    cpu[WAYS[2]] += backend_cpu(pids[WAYS[2]]) - c0
    for conn in conns.values():
        await conn.close()
    print(f"PostgreSQL CPU per task created, groups of {group}, {tasks[WAYS[0]]} tasks per way:")
    base_cpu = cpu[WAYS[0]] / tasks[WAYS[0]]
    for way in WAYS:
        per = cpu[way] / tasks[way]
        print(
            f"  {way:36} {per * 1000:.3f} ms ({per / base_cpu:.2f}x),"
            f" wall {wall[way] / tasks[way] * 1000:.3f} ms per task (client included)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--group", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    with postgres.private_postgres(durable=True) as url:
        asyncio.run(run(url, args.group, args.rounds))


if __name__ == "__main__":
    main()
