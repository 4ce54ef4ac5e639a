"""Poiesis beside Funnel on the same PostgreSQL, one server at a time, the same wrk runs.

    uv run python benchmarks/versus.py [--funnel PATH] [--baseline DIR] [--tasks 20000] [--workers 2]
        [--now-workers 1 --now-workers 2]

Starts one private, durable PostgreSQL (scripts/postgres) and, in turn, each server on a database of
its own in it: Funnel with its `noop` compute backend (the binary from --funnel or $FUNNEL, else
`funnel` on PATH; where none is found the run says so and the table has no Funnel column),
`poiesis api` from this tree with `backend = "none"`, and, with --baseline, `poiesis api` from
another checkout (its own `.venv`) for a before/after in the same run. Each server is given
--tasks tasks through its API first, so every task is kept QUEUED, then:

- creates/s: wrk, 16 connections, 10 s, POSTs of a 708-byte task (2 executors, 1 inline input,
  1 output, 2 tags);
- GET BASIC req/s: wrk, 16 connections, 10 s, over 2,000 of the stored tasks;
- GET BASIC p50 / p99 and ListTasks 256 BASIC p50 / p99 (no filter; a tag matching one task): wrk,
  one connection, 10 s;
- CPU per create in the server's processes and in PostgreSQL's, from /proc over the create run.

wrk comes from Debian (`apt-get install wrk`). Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.postgres import free_port  # noqa: E402
from tests.support.server import stop, wait_ready  # noqa: E402

BODY = (
    '{"name": "bench-task", "description": "two steps over one small input",'
    ' "tags": {"project": "p1", "bench": ""},'
    ' "inputs": [{"path": "/in/ref.txt", "content": "ACGTACGTACGTACGTACGTACGTACGTACGTACGTACGTACGT"}],'
    ' "outputs": [{"path": "/out/result.txt", "url": "s3://bucket/results/result.txt"}],'
    ' "resources": {"cpu_cores": 1, "ram_gb": 1.0},'
    ' "executors": [{"image": "alpine:3.20", "command": ["sh", "-c", "tr a-z A-Z < /in/ref.txt > /tmp/x"],'
    ' "workdir": "/tmp", "stdout": "/out/step1.log"},'
    ' {"image": "alpine:3.20", "command": ["sh", "-c", "wc -c /tmp/x > /out/result.txt"],'
    ' "env": {"LANG": "C", "STEP": "2"}, "stderr": "/out/step2.err"}]}'
)
NEEDLE = BODY.replace('"bench": ""', '"needle": "yes"')
TES = "/ga4gh/tes/v1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Figures:
    creates: float = 0.0
    get_rps: float = 0.0
    get_p50: float = 0.0
    get_p99: float = 0.0
    list_p50: float = 0.0
    list_p99: float = 0.0
    tag_p50: float = 0.0
    tag_p99: float = 0.0
    cpu_server: float = 0.0
    cpu_db: float = 0.0
    notes: list[str] = field(default_factory=list)


# --- wrk ----------------------------------------------------------------------------------------


def _lua_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def wrk(url: str, *, connections: int, seconds: int, script: str | None = None) -> dict[str, float]:
    """Run wrk; its requests/s and, with one connection, its p50/p99 in ms."""
    threads = min(2, connections)
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
        if script is not None:
            lua.write(script)
            lua.flush()
            args += ["-s", lua.name]
        out = subprocess.run([*args, url], check=True, capture_output=True, text=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw failed requests:\n{out}")
    figures = {"rps": float(next(ln.split()[1] for ln in out.splitlines() if ln.startswith("Requests/sec")))}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("50%", "99%"):
            figures[parts[0]] = _ms(parts[1])
    return figures


def _ms(text: str) -> float:
    for unit, scale in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text) * 1000


def post_script() -> str:
    return (
        f"wrk.method = 'POST'\nwrk.body = {_lua_string(BODY)}\n"
        "wrk.headers['Content-Type'] = 'application/json'\n"
    )


def get_script(ids: list[str]) -> str:
    table = ",".join(_lua_string(i) for i in ids)
    return (
        f"local ids = {{{table}}}\nlocal n = 0\n"
        "request = function()\n  n = n % #ids + 1\n"
        f"  return wrk.format('GET', '{TES}/tasks/' .. ids[n] .. '?view=BASIC')\nend\n"
    )


# --- processes ----------------------------------------------------------------------------------


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def tree(pid: int) -> list[int]:
    """`pid` and its descendants."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True, check=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        p, pp = map(int, line.split())
        children.setdefault(pp, []).append(p)
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


@dataclass
class Running:
    base: str
    process: subprocess.Popen[bytes]


@contextmanager
def started(args: list[str], env: dict[str, str], ready: str, log: Path) -> Iterator[Running]:
    with log.open("wb") as out:
        process = subprocess.Popen(args, env=os.environ | env, stdout=out, stderr=subprocess.STDOUT)
    base = ready.rsplit("/", 1)[0] if ready.endswith("/service-info") else ready
    try:
        wait_ready(process, ready, log, 60, args[0], pause=0.2)
        yield Running(base=base, process=process)
    finally:
        stop(process, 15)


def poiesis(python: str, database_url: str, workers: int, log: Path) -> AbstractContextManager[Running]:
    port = free_port()
    env = {
        "POIESIS_DATABASE_URL": database_url,
        "POIESIS_PORT": str(port),
        "POIESIS_BACKEND": "none",
        "POIESIS_WORKERS": str(workers),
        "POIESIS_LOG_LEVEL": "WARNING",
        "POIESIS_METRICS": "false",
    }
    url = f"http://127.0.0.1:{port}{TES}/service-info"
    return started([python, "-m", "poiesis.entrypoints.cli", "api"], env, url, log)


def funnel(
    binary: str, pg_port: int, database: str, work: Path, log: Path
) -> AbstractContextManager[Running]:
    http, rpc = free_port(), free_port()
    config = work / "funnel.yaml"
    config.write_text(
        f"""Database: postgres
Compute: noop
EventWriters: [postgres]
Logger: {{level: error}}
Server: {{HostName: 127.0.0.1, HTTPPort: "{http}", RPCPort: "{rpc}"}}
RPCClient: {{ServerAddress: "127.0.0.1:{rpc}"}}
Postgres:
  Host: "127.0.0.1:{pg_port}"
  Database: {database}
  User: postgres
  Password: ""
  Timeout: {{duration: 300s}}
Worker: {{WorkDir: {work}/worker}}
"""
    )
    url = f"http://127.0.0.1:{http}{TES}/service-info"
    return started([binary, "server", "run", "--config", str(config)], {}, url, log)


# --- one server ---------------------------------------------------------------------------------


async def fill(base: str, count: int) -> list[str]:
    """POST `count` tasks, 16 at a time; the ids of the last 2,000."""
    ids: list[str] = []
    remaining = count
    headers = {"Content-Type": "application/json"}

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            r = await client.post(f"{base}/tasks", content=BODY, headers=headers)
            if r.status_code != 200:
                raise RuntimeError(f"POST /tasks: {r.status_code} {r.text[:500]}")
            ids.append(r.json()["id"])

    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(16)))
        (await client.post(f"{base}/tasks", content=NEEDLE, headers=headers)).raise_for_status()
    return ids[-2000:]


def measure(
    name: str, server: Running, database_url: str, postmaster: int, tasks: int, seconds: int
) -> Figures:
    base = server.base
    t0 = time.perf_counter()
    ids = asyncio.run(fill(base, tasks))
    # Statistics as a database in use has them (autovacuum would take a minute to gather them).
    analyze = subprocess.run(["psql", database_url, "-qc", "ANALYZE"], capture_output=True)
    if analyze.returncode != 0:
        raise RuntimeError(analyze.stderr.decode())
    print(f"  {name}: {tasks} tasks stored through the API in {time.perf_counter() - t0:.0f} s", flush=True)
    f = Figures()
    server_pids, pg_pids = tree(server.process.pid), tree(postmaster)
    before = cpu_seconds(server_pids), cpu_seconds(pg_pids)
    created = wrk(f"{base}/tasks", connections=16, seconds=seconds, script=post_script())
    after = cpu_seconds(server_pids), cpu_seconds(pg_pids)
    f.creates = created["rps"]
    count = created["rps"] * seconds
    f.cpu_server = (after[0] - before[0]) / count * 1000
    f.cpu_db = (after[1] - before[1]) / count * 1000
    print(f"  {name}: {f.creates:.0f} creates/s", flush=True)
    f.get_rps = wrk(f"{base}/tasks", connections=16, seconds=seconds, script=get_script(ids))["rps"]
    one = wrk(f"{base}/tasks", connections=1, seconds=seconds, script=get_script(ids))
    f.get_p50, f.get_p99 = one["50%"], one["99%"]
    listed = wrk(f"{base}/tasks?view=BASIC&page_size=256", connections=1, seconds=seconds)
    f.list_p50, f.list_p99 = listed["50%"], listed["99%"]
    tagged = f"{base}/tasks?view=BASIC&page_size=256&tag_key=needle&tag_value=yes"
    found = httpx.get(tagged, timeout=30).json().get("tasks", [])
    if len(found) != 1:
        f.notes.append(f"the tag filter found {len(found)} tasks, not 1")
    one_tag = wrk(tagged, connections=1, seconds=seconds)
    f.tag_p50, f.tag_p99 = one_tag["50%"], one_tag["99%"]
    print(
        f"  {name}: GET {f.get_rps:.0f} req/s, p50 {f.get_p50:.2f} ms; list p50 {f.list_p50:.1f} ms",
        flush=True,
    )
    return f


def table(columns: dict[str, Figures]) -> str:
    rows = [
        ("creates/s, 16 connections", lambda f: f"{f.creates:,.0f}"),
        ("GET BASIC req/s, 16 connections", lambda f: f"{f.get_rps:,.0f}"),
        ("GET BASIC p50 / p99, one connection", lambda f: f"{f.get_p50:.2f} / {f.get_p99:.2f} ms"),
        ("ListTasks 256 BASIC, no filter, p50 / p99", lambda f: f"{f.list_p50:.1f} / {f.list_p99:.1f} ms"),
        ("ListTasks, tag matching one task, p50 / p99", lambda f: f"{f.tag_p50:.1f} / {f.tag_p99:.1f} ms"),
        ("CPU per create: server / PostgreSQL", lambda f: f"{f.cpu_server:.2f} / {f.cpu_db:.2f} ms"),
    ]
    out = ["| measure | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, cell in rows:
        out.append(f"| {label} | " + " | ".join(cell(f) for f in columns.values()) + " |")
    return "\n".join(out)


def find_funnel(given: str | None) -> str | None:
    candidate = given or os.environ.get("FUNNEL") or shutil.which("funnel")
    if candidate and os.access(candidate, os.X_OK):
        return candidate
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--funnel", help="a Funnel binary (else $FUNNEL, else funnel on PATH)")
    parser.add_argument("--baseline", type=Path, help="another Poiesis checkout, run from its .venv")
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2, help="Poiesis API processes")
    parser.add_argument(
        "--now-workers",
        type=int,
        action="append",
        help="API processes of this tree's Poiesis, one column each (repeatable; default --workers)",
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    binary = find_funnel(args.funnel)
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; {args.tasks} tasks stored")
    if binary is None:
        print("Funnel: not found (--funnel, $FUNNEL or PATH); compare with the figures in docs/benchmarks.md")
    else:
        print(f"Funnel: {binary}")
    pg_dir = Path(tempfile.mkdtemp(prefix="poiesis-versus-pg-"))
    pg_port = free_port()
    script = str(ROOT / "scripts" / "postgres")
    up = subprocess.run(
        [script, "up", str(pg_dir), str(pg_port)],
        check=True,
        capture_output=True,
        text=True,
        env=os.environ | {"POIESIS_PG_DURABLE": "1"},
    )
    url = up.stdout.strip().splitlines()[-1]
    postmaster = int((pg_dir / "data" / "postmaster.pid").read_text().split()[0])
    columns: dict[str, Figures] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="poiesis-versus-") as tmp:
            work = Path(tmp)

            def database(name: str) -> str:
                psql = ["psql", url, "-qc", f"CREATE DATABASE {name}"]
                subprocess.run(psql, check=True, capture_output=True)
                return url.rsplit("/", 1)[0] + f"/{name}"

            servers: list[tuple[str, str, Any]] = []
            if binary is not None:
                db = database("funnel")
                servers.append(
                    (
                        "Funnel, PostgreSQL",
                        db,
                        lambda: funnel(binary, pg_port, "funnel", work, work / "f.log"),
                    )
                )
            if args.baseline is not None:
                python = str(args.baseline / ".venv" / "bin" / "python")
                db_before = database("baseline")
                servers.append(
                    (
                        f"Poiesis before, {args.workers} workers",
                        db_before,
                        lambda: poiesis(python, db_before, args.workers, work / "b.log"),
                    )
                )
            for workers in args.now_workers or [args.workers]:
                db_now = database(f"poiesis_{workers}")
                servers.append(
                    (
                        f"Poiesis, {workers} worker{'s' if workers > 1 else ''}",
                        db_now,
                        lambda db=db_now, n=workers: poiesis(sys.executable, db, n, work / f"p{n}.log"),
                    )
                )
            for name, db, start in servers:
                with start() as server:
                    columns[name] = measure(name, server, db, postmaster, args.tasks, args.seconds)
    finally:
        subprocess.run([script, "down", str(pg_dir)], check=False, capture_output=True)
    print()
    print(table(columns))
    for name, f in columns.items():
        for note in f.notes:
            print(f"note, {name}: {note}")


if __name__ == "__main__":
    main()
