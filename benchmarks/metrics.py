"""What a Prometheus scrape of the API costs with many tasks stored.

    uv run python benchmarks/metrics.py [--tasks 100000] [--scrapes 200]

A private durable PostgreSQL with `--tasks` tasks spread over the states (written in bulk; the
triggers keep the counts as for any write), `poiesis api` with `metrics_cache_seconds = 0` so that
every scrape reads the counts. It prints the scrape's latency (p50/p99, over HTTP) beside the
statement a naive exporter would run on each scrape, a count over the whole task table, timed on
the same database in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from benchmarks.k8s import pct, template  # noqa: E402
from poiesis.adapters.sqlalchemy.engine import create_engine  # noqa: E402
from tests.conftest import fresh_postgres_url_sync  # noqa: E402
from tests.support import postgres  # noqa: E402
from tests.support.server import running_server  # noqa: E402

FILL = """
INSERT INTO task (id, owner, state, created_at, tags)
SELECT lpad(to_hex(g), 26, '0'), 'bench',
       (ARRAY['QUEUED','RUNNING','COMPLETE','COMPLETE','COMPLETE','EXECUTOR_ERROR','SYSTEM_ERROR','CANCELED'])
         [1 + g % 8]::task_state,
       now(), '{}'::jsonb
FROM generate_series(1, :n) AS g
"""
NAIVE = "SELECT state, count(*) FROM task GROUP BY state"


async def fill(url: str, n: int) -> list[float]:
    engine = create_engine(url, writer=True)
    async with engine.begin() as conn:
        await conn.execute(sa.text(FILL), {"n": n})
    async with engine.begin() as conn:
        await conn.execute(sa.text("ANALYZE task"))
    naive = []
    async with engine.connect() as conn:
        for _ in range(20):
            started = time.perf_counter()
            await conn.execute(sa.text(NAIVE))
            naive.append((time.perf_counter() - started) * 1000)
    await engine.dispose()
    return naive


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--scrapes", type=int, default=200)
    args = parser.parse_args()
    os.environ["POIESIS_PG_DURABLE"] = "1"
    with (
        tempfile.TemporaryDirectory(prefix="poiesis-bench-metrics-") as tmp,
        postgres.private_postgres() as pg,
    ):
        url = fresh_postgres_url_sync(pg, template(pg))
        started = time.perf_counter()
        naive = asyncio.run(fill(url, args.tasks))
        filled = time.perf_counter() - started
        env = {
            "POIESIS_BACKEND": "none",
            "POIESIS_METRICS_CACHE_SECONDS": "0",
            "POIESIS_LOG_LEVEL": "WARNING",
        }
        with running_server("api", url, Path(tmp), env) as server, httpx.Client(timeout=30) as http:
            for _ in range(10):
                http.get(f"{server.url}/metrics")
            scrapes = []
            for _ in range(args.scrapes):
                t0 = time.perf_counter()
                body = http.get(f"{server.url}/metrics").text
                scrapes.append((time.perf_counter() - t0) * 1000)
    stored = next(line for line in body.splitlines() if line.startswith('poiesis_tasks{state="COMPLETE"}'))
    print(f"Metrics scrape with {args.tasks:,} tasks stored (filled in {filled:.1f} s; {stored})")
    p50, p99 = pct(scrapes, 50), pct(scrapes, 99)
    print(f"  GET /metrics (counts read each time):  p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")
    naive_p50, naive_max = statistics.median(naive), max(naive)
    print(f"  a count over the task table, for scale: p50 {naive_p50:6.2f} ms   max {naive_max:6.2f} ms")
    print(f"  ratio (naive count / whole scrape, p50): {naive_p50 / p50:.1f}")


if __name__ == "__main__":
    main()
