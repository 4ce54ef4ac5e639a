"""API throughput and latency over HTTP, from a process separate from the server.

    uv run python benchmarks/api.py [--tasks 100000] [--database postgres|sqlite|both]

Starts `poiesis api` with no backend (on PostgreSQL, a private server from scripts/postgres; or SQLite),
seeds the store with --tasks tasks in bulk, then prints POST /tasks per second, GET /tasks/{id}
p50/p99 and ListTasks (page of 256, BASIC) p50/p99 for several filter combinations: from wrk with
one connection (where wrk is installed) and from a sequential Python client (httpx, whose own
reading of each answer is in its figures).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.versus import get_script, wrk  # noqa: E402
from poiesis.adapters.postgres import documents  # noqa: E402
from poiesis.adapters.sqlalchemy import schema as t  # noqa: E402
from poiesis.adapters.sqlalchemy.direct import PAGE_SETTINGS  # noqa: E402
from poiesis.adapters.sqlalchemy.engine import create_engine, migrate  # noqa: E402
from poiesis.adapters.sqlalchemy.rows import basic_document_of, details  # noqa: E402
from poiesis.adapters.sqlalchemy.store import SqlAlchemyTaskStore  # noqa: E402
from poiesis.domain.identity import new_task_id  # noqa: E402
from poiesis.domain.listing import build_query  # noqa: E402
from poiesis.domain.tes import View  # noqa: E402
from tests.support.postgres import private_postgres  # noqa: E402
from tests.support.server import running_server  # noqa: E402

BODY = (
    b'{"name": "bench-task", "tags": {"project": "p1", "bench": ""},'
    b' "executors": [{"image": "alpine", "command": ["echo", "hello"], "stdout": "/out/log"}],'
    b' "inputs": [{"path": "/in/a", "url": "s3://bucket/a"}],'
    b' "outputs": [{"path": "/out/log", "url": "s3://bucket/log"}]}'
)
STATES = ["COMPLETE"] * 80 + ["EXECUTOR_ERROR"] * 8 + ["SYSTEM_ERROR"] * 4 + ["RUNNING"] * 5 + ["QUEUED"] * 3
JSON = {"Content-Type": "application/json"}
PREFIXES = ["align", "call", "qc", "index", "merge"]


async def seed(url: str, count: int) -> None:
    """Insert `count` realistic tasks in bulk: varied names, states and tags, one executor each."""
    engine = create_engine(url)
    await migrate(engine)
    rng = random.Random(1)
    start = datetime.now(UTC) - timedelta(days=30)
    batch = 5000
    for offset in range(0, count, batch):
        tasks, executors, tags = [], [], []
        for i in range(offset, min(offset + batch, count)):
            created = start + timedelta(seconds=i * 20)
            task_id = new_task_id(created)
            project = f"p{rng.randrange(10)}"
            task_tags = {"project": project, "sample": f"s{i}"}
            if rng.random() < 0.9:
                task_tags["bench"] = ""
            tasks.append(
                {
                    "id": task_id,
                    "owner": "anonymous",
                    "state": rng.choice(STATES),
                    "created_at": created,
                    "name": f"{rng.choice(PREFIXES)}-{i}",
                    "tags": task_tags,
                }
            )
            executors.append({"task_id": task_id, "idx": 0, "image": "alpine", "command": ["echo", str(i)]})
            tags.extend({"task_id": task_id, "key": k, "value": v} for k, v in task_tags.items())
        async with engine.begin() as conn:
            await conn.execute(sa.insert(t.task), tasks)
            await conn.execute(sa.insert(t.executor), executors)
            if not url.startswith("postgresql"):  # PostgreSQL's tag filter reads task.tags alone
                await conn.execute(sa.insert(t.tag), tags)
    # As the store's writers keep them: each task's BASIC document in its row (SQLite's rendered in
    # Python, as its store does).
    async with engine.begin() as conn:
        if url.startswith("postgresql"):
            await conn.execute(
                sa.text(f"UPDATE task SET basic_document = {documents.expression(View.BASIC)}")
            )
        else:
            ids = [r.id for r in await conn.execute(sa.select(t.task.c.id))]
            keep = (
                sa.update(t.task)
                .where(t.task.c.id == sa.bindparam("task_id"))
                .values(basic_document=sa.bindparam("document"))
            )
            for start in range(0, len(ids), 1000):
                rows = (await conn.execute(details(View.BASIC), {"ids": ids[start : start + 1000]})).all()
                kept = [{"task_id": r.id, "document": basic_document_of(r).decode()} for r in rows]
                await conn.execute(keep, kept)
    async with engine.begin() as conn:
        await conn.execute(sa.text("ANALYZE"))
    await engine.dispose()


async def explain(url: str) -> None:
    """EXPLAIN ANALYZE the page query of every ListTasks filter combination, on fresh statistics."""
    engine = create_engine(url)
    store = SqlAlchemyTaskStore(engine)
    async with engine.connect() as conn:
        for name, value in PAGE_SETTINGS.items():  # as the API's pool for pages plans them
            await conn.execute(sa.text(f"SET {name} = {value}"))
        for label, params in LIST_QUERIES.items():
            query = build_query(owner=None, page_token=None, page_size=256, view="BASIC", **_parse(params))
            statement = store.documents_query(query)
            sql = statement.compile(engine.sync_engine, compile_kwargs={"literal_binds": True})
            plan = [r[0] for r in await conn.execute(sa.text(f"EXPLAIN ANALYZE {sql}"))]
            top = next(line for line in plan if "->" in line).strip().removeprefix("-> ").split("  (")[0]
            total = next(line for line in plan if line.startswith("Execution Time"))
            print(f"  plan, {label}: {total.split(': ')[1]} via {top}")
    await engine.dispose()


def _parse(params: str) -> dict[str, object]:
    out: dict[str, object] = {"name_prefix": None, "state": None, "tag_keys": [], "tag_values": []}
    for pair in filter(None, params.split("&")):
        key, _, value = pair.partition("=")
        if key == "tag_key":
            out["tag_keys"].append(value)  # type: ignore[attr-defined]
        elif key == "tag_value":
            out["tag_values"].append(value)  # type: ignore[attr-defined]
        else:
            out[key] = value
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def creates_per_second_wrk(base: str, seconds: int, concurrency: int) -> float:
    """POST /tasks from wrk (a C load generator): a Python client would saturate before the server."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        body = BODY.decode()  # no single quotes or backslashes: a plain Lua string
        script.write(
            f"wrk.method = 'POST'\nwrk.body = '{body}'\nwrk.headers['Content-Type'] = 'application/json'\n"
        )
        script.flush()
        out = subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "-s", script.name, f"{base}/tasks"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"failed creates:\n{out}")
    return float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec")))


async def creates_per_second(base: str, total: int, concurrency: int) -> tuple[float, list[str]]:
    ids: list[str] = []
    remaining = total

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            r = await client.post(f"{base}/tasks", content=BODY, headers=JSON)
            r.raise_for_status()
            ids.append(r.json()["id"])

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        await client.post(f"{base}/tasks", content=BODY, headers=JSON)  # warm up
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return total / elapsed, ids


async def latencies(base: str, paths: list[str], concurrency: int = 1) -> list[float]:
    out: list[float] = []
    async with httpx.AsyncClient(timeout=30) as client:
        for path in paths[:5]:  # warm up
            (await client.get(base + path)).raise_for_status()
        for path in paths:
            started = time.perf_counter()
            r = await client.get(base + path)
            out.append(time.perf_counter() - started)
            r.raise_for_status()
    return out


LIST_QUERIES = {
    "no filter": "",
    "state=RUNNING (5%)": "&state=RUNNING",
    "name_prefix=align (20%)": "&name_prefix=align",
    "tag bench (90%) + name_prefix=qc": "&tag_key=bench&name_prefix=qc",
    "tag project=p3 (10%) + state=COMPLETE": "&tag_key=project&tag_value=p3&state=COMPLETE",
    "tag sample=s123 (1 task)": "&tag_key=sample&tag_value=s123",
    "tag bench + project=p1 + prefix + state": "&tag_key=bench&tag_key=project&tag_value=&tag_value=p1"
    "&name_prefix=call&state=COMPLETE",
}


async def measure(
    name: str, command: str, url: str, tasks: int, creates: int, log_dir: Path, workers: int = 1
) -> None:
    t0 = time.perf_counter()
    await seed(url, tasks)
    print(f"\n== {name}: seeded {tasks} tasks in {time.perf_counter() - t0:.1f}s", flush=True)
    if url.startswith("postgresql"):
        await explain(url)
    env = {"POIESIS_LOG_LEVEL": "WARNING", "POIESIS_WORKERS": str(workers), "POIESIS_BACKEND": "none"}
    with running_server(command, url, log_dir, env) as server:
        base = server.tes
        if shutil.which("wrk"):
            rate = creates_per_second_wrk(base, seconds=10, concurrency=16)
            print(f"POST /tasks: {rate:.0f} creates/s (wrk, 10 s, 16 connections, {workers} API process(es))")
        else:
            rate, _ = await creates_per_second(base, creates, concurrency=16)
            print(f"POST /tasks: {rate:.0f} creates/s (httpx client, 16 concurrent; wrk is faster)")
        async with httpx.AsyncClient() as client:
            listed = (await client.get(f"{base}/tasks?page_size=2000")).json()["tasks"]
        ids = [task["id"] for task in listed]
        sample = random.Random(2).sample(ids, min(500, len(ids)))
        if shutil.which("wrk"):
            # wrk, one connection: the server's latency, not a Python client's parsing of 256 tasks
            got_wrk = wrk(server.url, connections=1, seconds=5, script=get_script(sample))
            print(f"GET /tasks/{{id}} BASIC: p50 {got_wrk['50%']:.2f} ms, p99 {got_wrk['99%']:.2f} ms (wrk)")
            for label, query in LIST_QUERIES.items():
                got_wrk = wrk(f"{base}/tasks?view=BASIC&page_size=256{query}", connections=1, seconds=5)
                print(
                    f"ListTasks 256 BASIC, {label}: p50 {got_wrk['50%']:.2f} ms, "
                    f"p99 {got_wrk['99%']:.2f} ms (wrk)"
                )
        got = await latencies(base, [f"/tasks/{i}?view=BASIC" for i in sample])
        print(f"GET /tasks/{{id}} BASIC: p50 {pct(got, 0.5):.2f} ms, p99 {pct(got, 0.99):.2f} ms (httpx)")
        for label, query in LIST_QUERIES.items():
            got = await latencies(base, [f"/tasks?view=BASIC&page_size=256{query}"] * 200)
            print(
                f"ListTasks 256 BASIC, {label}: p50 {pct(got, 0.5):.2f} ms, "
                f"p99 {pct(got, 0.99):.2f} ms (httpx)"
            )
        # Deep in the list: follow page tokens for 20 pages.
        async with httpx.AsyncClient(timeout=30) as client:
            token, times = None, []
            for _ in range(20):
                q = f"&page_token={token}" if token else ""
                started = time.perf_counter()
                r = await client.get(f"{base}/tasks?view=BASIC&page_size=256{q}")
                times.append(time.perf_counter() - started)
                token = r.json().get("next_page_token")
        deep = f"p50 {pct(times, 0.5):.2f} ms, max {max(times) * 1000:.2f} ms"
        print(f"ListTasks 256 BASIC, 20 pages deep: {deep}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--creates", type=int, default=5000)
    parser.add_argument("--database", choices=["postgres", "sqlite", "both"], default="both")
    parser.add_argument("--workers", type=int, default=1, help="API processes for PostgreSQL")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="poiesis-bench-") as tmp:
        log_dir = Path(tmp)
        if args.database in ("postgres", "both"):
            with private_postgres(durable=True) as url:
                asyncio.run(
                    measure("PostgreSQL", "api", url, args.tasks, args.creates, log_dir, args.workers)
                )
        if args.database in ("sqlite", "both"):
            sqlite = f"sqlite:///{log_dir / 'bench.db'}"
            asyncio.run(measure("SQLite", "api", sqlite, args.tasks, args.creates, log_dir))


if __name__ == "__main__":
    main()
