"""The door's cost for the largest task it accepts: 1,000 directories of 12 inputs each.

    uv run python benchmarks/submission.py

Prints the time `domain.submission.accept` takes for it, and beside it, in the same run, the rule
"no path inside a FILE" checked the plain way (every path against every FILE), which the door used
before: the ratio is what the lookup by directory saves.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from poiesis.domain.submission import NewInput, NewTask, Rules, accept
from poiesis.domain.tes import Executor


def plain_rule(paths: list[str], files: list[str]) -> bool:
    return any(p.startswith(f + "/") for p in paths for f in files)


def main() -> None:
    inputs = [NewInput(path=f"/data/d{i}/f{j}", content="x") for i in range(1000) for j in range(12)]
    new = NewTask(executors=[Executor(image="alpine", command=["true"])], inputs=inputs)
    began = time.perf_counter()
    accept(new, task_id="t", creation_time="2026-01-01T00:00:00Z", rules=Rules(max_inputs=20_000))
    door = time.perf_counter() - began
    paths = [x.path for x in inputs]
    began = time.perf_counter()
    plain_rule(paths, paths)
    plain = time.perf_counter() - began
    print(f"accept, 12,000 inputs: {door:.2f} s; the plain rule alone: {plain:.2f} s ({plain / door:.0f}x)")


if __name__ == "__main__":
    main()
