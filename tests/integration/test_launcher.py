"""The executor launcher in a root with no shell and no libraries: redirection, tails and the real
exit code, as a distroless or scratch image would run it."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from poiesis.adapters.kubernetes.taskpod import EXIT_CODE_MESSAGE
from poiesis.domain.times import parse_time

SOURCE = Path(__file__).resolve().parents[2] / "deploy" / "launcher"


@pytest.fixture(scope="module")
def launcher() -> Path:
    if not shutil.which("go"):
        pytest.skip("no Go toolchain to build the launcher (deploy/launcher)")
    if not shutil.which("bwrap"):
        pytest.skip("bubblewrap is not installed: run scripts/test, or apt-get install bubblewrap")
    digest = hashlib.sha256((SOURCE / "main.go").read_bytes() + (SOURCE / "go.mod").read_bytes()).hexdigest()[
        :16
    ]
    target = Path.home() / ".cache" / "poiesis-launcher" / digest / "launcher"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(target), "."],
            cwd=SOURCE,
            env=os.environ | {"CGO_ENABLED": "0"},
            check=True,
        )
    return target


def scratch(launcher: Path, work: Path, *argv: str) -> subprocess.CompletedProcess[bytes]:
    """Run in an empty root holding only the launcher (as /tes/bin/launcher) and /work: no /bin/sh."""
    return subprocess.run(
        [
            "bwrap",
            "--unshare-pid",
            "--die-with-parent",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--ro-bind",
            str(launcher),
            "/tes/bin/launcher",
            "--bind",
            str(work),
            "/work",
            "--clearenv",
            "--setenv",
            "PATH",
            "/tes/bin",
            "--",
            "/tes/bin/launcher",
            *argv,
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )


def termination(tmp_path: Path) -> int:
    """The exit code in the launcher's termination message, whose start and end (to the
    microsecond, in UTC) are in order and around now."""
    message = (tmp_path / "termination").read_text()
    match = EXIT_CODE_MESSAGE.fullmatch(message)
    assert match, message
    started, finished = (parse_time(match.group(g)) for g in (2, 3))
    assert started <= finished <= datetime.now(UTC)
    assert datetime.now(UTC) - started < timedelta(minutes=5)
    return int(match.group(1))


def test_no_shell_redirection_tails_and_real_exit_code(launcher: Path, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("from stdin\n")
    # The executor here is the launcher itself, started with a bad flag: it reads nothing, writes
    # one line to stderr and exits 2; the outer launcher records that.
    result = scratch(
        launcher,
        tmp_path,
        "--stdin",
        "/work/in.txt",
        "--stdout",
        "/work/out.txt",
        "--stderr",
        "/work/err.txt",
        "--status",
        "/work/executor-0",
        "--termination-log",
        "/work/termination",
        "--",
        "/tes/bin/launcher",
        "--bogus",
    )
    assert result.returncode == 2
    assert termination(tmp_path) == 2
    assert b'unknown argument "--bogus"' in (tmp_path / "err.txt").read_bytes()
    assert (tmp_path / "err.txt").read_bytes() in result.stderr  # the container log has it too
    assert (tmp_path / "executor-0.stderr").read_bytes() == (tmp_path / "err.txt").read_bytes()
    assert (tmp_path / "out.txt").read_bytes() == b""


def test_ignore_error_exits_0_and_keeps_the_real_code(launcher: Path, tmp_path: Path) -> None:
    result = scratch(
        launcher,
        tmp_path,
        "--ignore-error",
        "--termination-log",
        "/work/termination",
        "--",
        "/tes/bin/launcher",
        "--bogus",
    )
    assert result.returncode == 0
    assert termination(tmp_path) == 2


def test_a_missing_program_exits_127_with_a_message(launcher: Path, tmp_path: Path) -> None:
    result = scratch(launcher, tmp_path, "--termination-log", "/work/termination", "--", "no-such-tool")
    assert result.returncode == 127
    assert termination(tmp_path) == 127
    assert b"cannot run no-such-tool" in result.stderr


def test_a_failure_with_a_failed_mark_lets_the_pod_go_on_and_the_next_executor_is_skipped(
    launcher: Path, tmp_path: Path
) -> None:
    mark = ["--failed-mark", "/work/failed", "--termination-log", "/work/termination"]
    ok = scratch(launcher, tmp_path, *mark, "--", "/tes/bin/launcher", "--", "/tes/bin/launcher", "--bogus")
    # The inner launcher (no mark) exits 2; its caller with the mark records that as a failure.
    assert ok.returncode == 0
    assert termination(tmp_path) == 2
    assert (tmp_path / "failed").read_text() == "2\n"
    # The next executor's launcher finds the mark: nothing runs (it would create /work/ran).
    skipped = scratch(
        launcher, tmp_path, *mark, "--", "/tes/bin/launcher", "--stdout", "/work/ran", "--", "x"
    )
    assert skipped.returncode == 0
    assert (tmp_path / "termination").read_text() == "skipped: an earlier executor failed"
    assert not (tmp_path / "ran").exists()


def test_a_success_with_a_failed_mark_writes_no_mark(launcher: Path, tmp_path: Path) -> None:
    done = scratch(
        launcher,
        tmp_path,
        "--failed-mark",
        "/work/failed",
        "--termination-log",
        "/work/termination",
        "--",
        "/tes/bin/launcher",
        "--ignore-error",
        "--termination-log",
        "",
        "--",
        "/tes/bin/launcher",
        "--bogus",
    )
    assert done.returncode == 0
    assert termination(tmp_path) == 0
    assert not (tmp_path / "failed").exists()
