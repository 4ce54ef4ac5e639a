"""The Task Recorder's own start-up: process start -> its first request for its Pod.

    uv run python benchmarks/trec.py [--runs 15] [--baseline DIR]

Starts `poiesis trec` --runs times against a stand-in Kubernetes API on 127.0.0.1 that notes when
the first request arrives and answers 403 (the grant not there yet, which trec waits out), then
stops it. Prints the start-up p50/max and the process's RSS at that moment. Each checkout's modules
are compiled to bytecode first, as the image has them. With --baseline,
another checkout's `poiesis trec` (its own .venv) is started the same number of times, interleaved,
for a before/after in one run. No database is reached: the recorder reads its task only once it
has seen its Pod.

benchmarks/k8s.py measures the whole recorder on the test cluster (start-up there includes waiting
for its grant, and the peak RSS over a task's life).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.server import stop  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def once(python: str, work: Path) -> tuple[float, float]:
    """(seconds from the process's start to its first request, its RSS in MiB then)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    (work / "token").write_text("token")
    env = os.environ | {
        "POIESIS_TASK_ID": "01arz3ndektsv4rrffq69g5fav",
        "POIESIS_POD_NAME": "tes-01arz3ndektsv4rrffq69g5fav-x",
        "POIESIS_POD_NAMESPACE": "bench",
        "POIESIS_DATABASE_URL": "postgresql://bench@127.0.0.1:9/bench",
        "POIESIS_TREC_API_SERVER": f"http://127.0.0.1:{port}",
        "POIESIS_TREC_TOKEN_FILE": str(work / "token"),
        "POIESIS_TREC_CA_FILE": "",
        "POIESIS_TREC_STATUS_DIR": str(work),
        "POIESIS_TREC_VOLUME": str(work),
        "POIESIS_LOG_LEVEL": "WARNING",
    }
    arrived: list[float] = []
    rss: list[float] = []
    process: subprocess.Popen[bytes] | None = None

    def serve() -> None:
        conn, _ = listener.accept()
        arrived.append(time.perf_counter())
        assert process is not None
        rss.append(rss_mib(process.pid))
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    started = time.perf_counter()
    process = subprocess.Popen(
        [python, "-m", "poiesis.entrypoints.cli", "trec"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    thread.join(30)
    stop(process)
    listener.close()
    if not arrived:
        raise RuntimeError(f"trec sent no request: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
    return arrived[0] - started, rss[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--baseline", type=Path, help="another Poiesis checkout, run from its .venv")
    args = parser.parse_args()
    pythons = {"Poiesis": sys.executable}
    if args.baseline is not None:
        pythons = {"before": str(args.baseline / ".venv" / "bin" / "python"), **pythons}
    for python in pythons.values():
        # As in the image (UV_COMPILE_BYTECODE=1): no process compiles Poiesis's own modules at start.
        source = Path(python).parents[2] / "src"
        compiled = subprocess.run(
            [python, "-m", "compileall", "-q", str(source)],
            env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
            capture_output=True,
        )
        if compiled.returncode != 0:
            raise RuntimeError(compiled.stdout.decode() + compiled.stderr.decode())
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in pythons}
    with tempfile.TemporaryDirectory(prefix="poiesis-bench-trec-") as tmp:
        for _ in range(args.runs):
            for name, python in pythons.items():
                results[name].append(once(python, Path(tmp)))
    print(f"trec, process start -> first request for its Pod, {args.runs} runs each ({os.cpu_count()} cores)")
    for name, runs in results.items():
        times = [t * 1000 for t, _ in runs]
        memory = [m for _, m in runs]
        print(
            f"  {name:8} p50 {statistics.median(times):6.0f} ms  max {max(times):6.0f} ms"
            f"   RSS then p50 {statistics.median(memory):5.1f} MiB"
        )


if __name__ == "__main__":
    main()
