"""Filer throughput and memory: S3 (moto in server mode, on 127.0.0.1) to the task volume and back.

    uv run python benchmarks/filers.py [--big-gb 2] [--small 2000] [--small-kb 100]

For each data set it runs, in this order and on the same data: a bare obstore copy (a few lines of
obstore, no Poiesis), then `poiesis filer stage-in` and `stage-out` as separate processes, and
prints MB/s, the filer's ratio to the bare copy, and each process's peak RSS. Both sides talk to the
same moto server, whose own speed bounds both; the ratio is what this benchmark judges.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402

from poiesis.domain.submission import NewInput, NewOutput  # noqa: E402
from poiesis.domain.tes import FileType  # noqa: E402
from tests.builders import make_task  # noqa: E402
from tests.conftest import FakeClock  # noqa: E402
from tests.support import storage  # noqa: E402
from tests.support.measure import wait_sampling  # noqa: E402

BARE = """
import asyncio, os, sys
from pathlib import Path
import obstore
from obstore.store import S3Store

async def main(direction, bucket, prefix, local, parallel):
    store = S3Store(bucket, endpoint=os.environ["BENCH_ENDPOINT"], access_key_id=os.environ["BENCH_KEY"],
                    secret_access_key=os.environ["BENCH_SECRET"], region="us-east-1",
                    client_options={"allow_http": True})
    gate = asyncio.Semaphore(parallel)
    if direction == "get":
        metas = [m for batch in obstore.list(store, prefix) for m in batch]
        async def get(meta):
            async with gate:
                dest = Path(local) / meta["path"][len(prefix):].lstrip("/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                result = await obstore.get_async(store, meta["path"])
                with open(dest, "wb") as f:
                    async for chunk in result.stream(min_chunk_size=8 * 1024 * 1024):
                        f.write(chunk)
        await asyncio.gather(*(get(m) for m in metas))
    else:
        files = [p for p in Path(local).rglob("*") if p.is_file()]
        async def put(path):
            async with gate:
                key = prefix + "/" + str(path.relative_to(local))
                await obstore.put_async(store, key, path, chunk_size=16 * 1024 * 1024, max_concurrency=4)
        await asyncio.gather(*(put(p) for p in files))

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])))
"""


def run_measured(command: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Run a child process; returns (seconds, its peak RSS in bytes)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=os.environ | env)
    code, peak = wait_sampling(process.pid)
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"{command[:6]} failed")
    return seconds, peak


def make_data(directory: Path, files: int, size: int) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    block = hashlib.sha256(b"bench").digest() * (1024 * 1024 // 32)
    total = 0
    for i in range(files):
        with (directory / f"part-{i:05d}.dat").open("wb") as f:
            left = size
            while left:
                chunk = block[: min(left, len(block))]
                f.write(chunk)
                left -= len(chunk)
        total += size
    return total


def bench(name: str, s3: storage.S3, work: Path, files: int, size: int, parallel: int) -> None:
    client = s3.client()
    bucket = f"bench-{name}"
    client.create_bucket(Bucket=bucket)
    source = work / name / "source" / "data" / "set"
    total = make_data(source, files, size)
    env = {"BENCH_ENDPOINT": s3.endpoint, "BENCH_KEY": s3.key_id, "BENCH_SECRET": s3.secret}
    bare = [sys.executable, "-c", BARE]

    # Upload the data set once with the bare copy (also the bare upload figure), then download it.
    up_bare, up_bare_rss = run_measured([*bare, "put", bucket, "bare", str(source), str(parallel)], env)
    down_dir = work / name / "bare-down"
    down_bare, down_bare_rss = run_measured([*bare, "get", bucket, "bare", str(down_dir), str(parallel)], env)
    shutil.rmtree(down_dir)

    endpoints = work / "endpoints.toml"
    endpoints.write_text(s3.endpoints())
    task = make_task(
        FakeClock(),
        inputs=[NewInput(path="/data/set", url=f"s3://{bucket}/bare", type=FileType.DIRECTORY)],
        outputs=[NewOutput(path="/data/set", url=f"s3://{bucket}/filer", type=FileType.DIRECTORY)],
    )
    task_file = work / name / "task.json"
    task_file.write_bytes(msgspec.json.encode(task))
    volume = work / name / "volume"
    filer_env = {
        "POIESIS_STORAGE_ENDPOINTS_FILE": str(endpoints),
        "POIESIS_FILER_PARALLEL": str(parallel),
        "POIESIS_LOG_LEVEL": "WARNING",
    }
    filer = [sys.executable, "-m", "poiesis.entrypoints.cli", "filer"]
    common = ["--task", str(task_file), "--root", str(volume)]
    down, down_rss = run_measured([*filer, "stage-in", *common], filer_env)
    up, up_rss = run_measured([*filer, "stage-out", *common], filer_env)
    shutil.rmtree(work / name)
    for key in ("bare", "filer"):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            for o in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=o["Key"])

    mb = total / 1e6
    print(f"\n{name}: {files} file(s) x {size / 1e6:.1f} MB = {mb:.0f} MB, {parallel} transfers at once")
    print(f"  {'':28} {'MB/s':>8} {'peak RSS MB':>12}")
    print(f"  {'bare obstore S3 -> volume':28} {mb / down_bare:8.1f} {down_bare_rss / 1e6:12.1f}")
    print(f"  {'filer stage-in':28} {mb / down:8.1f} {down_rss / 1e6:12.1f}   ratio {down_bare / down:.2f}")
    print(f"  {'bare obstore volume -> S3':28} {mb / up_bare:8.1f} {up_bare_rss / 1e6:12.1f}")
    print(f"  {'filer stage-out':28} {mb / up:8.1f} {up_rss / 1e6:12.1f}   ratio {up_bare / up:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--big-gb", type=float, default=2.0)
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--small-kb", type=int, default=100)
    parser.add_argument("--parallel", type=int, default=8)
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
    with tempfile.TemporaryDirectory(prefix="poiesis-bench-filers-") as tmp:
        work = Path(tmp)
        with storage.moto_s3(work) as s3:
            bench("big", s3, work, 1, int(args.big_gb * 1e9), args.parallel)
            bench("small", s3, work, args.small, args.small_kb * 1000, args.parallel)


if __name__ == "__main__":
    main()
