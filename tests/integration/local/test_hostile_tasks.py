"""A task is hostile: what it tries in the embedded sandbox, and that each attempt is stopped.

Every test here is an attack a task can send as ordinary TES input, run for real through
`poiesis serve` and bubblewrap. When the tests run as root, so does the server, which is the case
that matters most: the sandbox must still hold none of root's power.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import tes

from tests.support.server import Server, running_server, sandbox_workspaces
from tests.support.tasks import wait_ended

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

if not Path("/usr/bin/bwrap").exists():
    pytest.skip("bubblewrap is not installed: run scripts/test", allow_module_level=True)

AS_ROOT = os.geteuid() == 0
X86_64 = pytest.mark.skipif(platform.machine() != "x86_64", reason="the call is made by its x86-64 number")


@pytest.fixture(scope="module")
def host() -> Iterator[Path]:
    """A directory of the host's that no task may touch, with a secret in it."""
    place = Path(tempfile.mkdtemp(prefix="poiesis-host-", dir="/tmp"))
    place.chmod(0o755)
    (place / "secret.txt").write_text("host-secret\n")
    (place / "secret.txt").chmod(0o600)
    yield place
    shutil.rmtree(place, ignore_errors=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("hostile")
    (tmp / "shared").mkdir(mode=0o777)
    with sandbox_workspaces() as workspaces:
        env = {
            "POIESIS_BACKEND": "local",
            "POIESIS_LOCAL_RUNTIME": "bwrap",
            "POIESIS_LOCAL_WORKSPACES": str(workspaces),
            "POIESIS_FILE_ROOTS": str(tmp / "shared"),
        }
        with running_server("serve", f"sqlite:///{tmp / 'tes.db'}", tmp, env) as s:
            yield s


@pytest.fixture(scope="module")
def client(server: Server) -> tes.HTTPClient:
    return tes.HTTPClient(server.url, timeout=10)


def run(client: tes.HTTPClient, *executors: tes.Executor, **fields: object) -> tes.Task:
    return wait_ended(client, client.create_task(tes.Task(executors=list(executors), **fields)))


def sh(script: str, **fields: object) -> tes.Executor:
    return tes.Executor(image="alpine", command=["sh", "-c", script], **fields)


def sleeping_executor(client: tes.HTTPClient, **fields: object) -> tuple[str, psutil.Process]:
    """Start a task whose executor sleeps, and find its process on the host."""
    marker = f"30.{time.time_ns() % 10**9}"
    task_id = client.create_task(
        tes.Task(executors=[tes.Executor(image="alpine", command=["sleep", marker])], **fields)
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", marker]]
        if found:
            return task_id, found[0]
        time.sleep(0.1)
    raise AssertionError("the executor's process did not appear")


def logs(task: tes.Task) -> list[tes.ExecutorLog]:
    return task.logs[0].logs


def test_the_task_holds_no_privilege(client: tes.HTTPClient) -> None:
    task = run(client, sh("id -u; grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status"))
    out = logs(task)[0].stdout.split()
    assert task.state == "COMPLETE"
    assert out[out.index("CapEff:") + 1] == "0000000000000000"
    assert out[out.index("CapBnd:") + 1] == "0000000000000000"
    assert out[out.index("NoNewPrivs:") + 1] == "1"
    assert out[out.index("Seccomp:") + 1] == "2"  # a filter is loaded
    if AS_ROOT:
        assert out[0] == "65534"


@pytest.mark.skipif(not AS_ROOT, reason="the server runs the sandbox as another user only as root")
def test_seen_from_the_host_the_task_runs_as_the_unprivileged_user(client: tes.HTTPClient) -> None:
    task_id, process = sleeping_executor(client)
    uids, gids = set(process.uids()), set(process.gids())
    client.cancel_task(task_id)
    assert uids == {65534}
    assert gids == {65534}


def test_remounting_a_system_directory_writable_fails(client: tes.HTTPClient, host: Path) -> None:
    target = f"/etc/poiesis-escape-{host.name}"
    task = run(
        client,
        sh(f"mount -o remount,bind,rw /etc; mount -o remount,rw /etc; touch {target}; unshare -U -r true"),
    )
    assert task.state == "EXECUTOR_ERROR"
    assert not Path(target).exists()


@pytest.mark.parametrize(
    ("call", "args"),
    [
        pytest.param("mount", "b'tmpfs', b'/tmp', b'tmpfs', 0, None", id="mount"),
        pytest.param("unshare", "0x10000000", id="unshare (user namespace)"),
        pytest.param("ptrace", "16, 1, 0, 0", id="ptrace attach"),
        pytest.param("syscall", "250, 0, -3, 0, 0, 0", id="keyctl", marks=X86_64),
        pytest.param("syscall", "321, 0, 0, 0", id="bpf", marks=X86_64),
        pytest.param("reboot", "0xfee1dead, 672274793, 0x4321fedc, 0", id="reboot"),
    ],
)
def test_dangerous_system_calls_are_refused(client: tes.HTTPClient, call: str, args: str) -> None:
    script = (
        "import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); "
        f"r = libc.{call}({args}); print(r, os.strerror(ctypes.get_errno()))"
    )
    task = run(client, tes.Executor(image="alpine", command=["python3", "-c", script]))
    assert task.state == "COMPLETE", logs(task)[0].stderr
    assert logs(task)[0].stdout.strip() == "-1 Operation not permitted"


def test_host_secrets_are_unreadable(client: tes.HTTPClient, host: Path, server: Server) -> None:
    database = server.log.parent / "tes.db"
    task = run(
        client,
        sh(f"cat /etc/shadow {database} {host}/secret.txt /proc/{server.process.pid}/environ; true"),
    )
    assert task.state == "COMPLETE"
    out = logs(task)[0].stdout
    assert "root:" not in out
    assert "host-secret" not in out
    assert "SQLite" not in out
    assert "POIESIS" not in out


def test_the_task_cannot_reach_the_server_or_the_host(client: tes.HTTPClient, server: Server) -> None:
    port = server.url.rsplit(":", 1)[1]
    task = run(
        client,
        tes.Executor(
            image="alpine",
            command=[
                "python3",
                "-c",
                f"import socket; socket.create_connection(('127.0.0.1', {port}), 3); print('REACHED')",
            ],
        ),
    )
    assert task.state == "EXECUTOR_ERROR"
    assert "REACHED" not in logs(task)[0].stdout
    assert "ConnectionRefusedError" in logs(task)[0].stderr
    # Why, where the user looks: the task's system_logs, service-info and the start-up line.
    assert any("tasks have no network (local_network = none)" in x for x in task.logs[0].system_logs)
    assert "tasks have no network" in client.get_service_info().description
    assert "tasks have no network" in server.log.read_text()


def test_a_planted_link_cannot_redirect_stdin_to_a_host_file(client: tes.HTTPClient, host: Path) -> None:
    task = run(
        client,
        sh(f"ln -s {host}/secret.txt /data/x/in"),
        tes.Executor(image="alpine", command=["cat"], stdin="/data/x/in"),
        volumes=["/data/x"],
    )
    assert task.state == "EXECUTOR_ERROR"
    second = logs(task)[1]
    assert second.exit_code == 1
    assert "link" in second.stderr
    assert "host-secret" not in second.stdout


@pytest.mark.parametrize(
    ("plant", "stdout"),
    [
        pytest.param("ln -s {host}/written /data/x/out", "/data/x/out", id="file link"),
        pytest.param(
            "rmdir /data/x/sub 2>/dev/null; ln -s {host} /data/x/sub", "/data/x/sub/written", id="dir link"
        ),
        pytest.param("mkfifo /data/x/out", "/data/x/out", id="fifo"),
    ],
)
def test_a_planted_link_cannot_redirect_stdout_onto_the_host(
    client: tes.HTTPClient, host: Path, plant: str, stdout: str
) -> None:
    task = run(
        client,
        sh(plant.format(host=host)),
        tes.Executor(image="alpine", command=["echo", "pwned"], stdout=stdout),
        volumes=["/data/x"],
    )
    assert task.state == "EXECUTOR_ERROR"
    assert logs(task)[1].exit_code == 1
    assert not (host / "written").exists()


def test_a_planted_link_cannot_steer_a_later_working_directory(client: tes.HTTPClient, host: Path) -> None:
    task = run(
        client,
        sh(f"ln -s {host} /data/x/work"),
        tes.Executor(image="alpine", command=["touch", "made-here"], workdir="/data/x/work/deeper"),
        volumes=["/data/x"],
    )
    assert task.state == "EXECUTOR_ERROR"
    assert not (host / "deeper").exists()


def test_a_program_that_cannot_start_is_127(client: tes.HTTPClient) -> None:
    task = run(client, tes.Executor(image="alpine", command=["/no/such/program"]))
    assert task.state == "EXECUTOR_ERROR"
    assert logs(task)[0].exit_code == 127
    assert "/no/such/program" in logs(task)[0].stderr


def test_the_task_sees_no_host_data_directories(client: tes.HTTPClient) -> None:
    task = run(client, sh("ls /var /srv /root /home 2>&1; true"))
    out = logs(task)[0].stdout
    assert "lib" not in out.split()  # /var is a fresh tmpfs, not the host's /var/lib
    assert "No such file" in out


CGROUPS = AS_ROOT and Path("/sys/fs/cgroup/pids").is_dir()


@pytest.mark.skipif(not CGROUPS, reason="needs root and cgroup v1 hierarchies (memory, pids, cpu)")
def test_a_fork_bomb_stops_at_the_process_limit(client: tes.HTTPClient) -> None:
    # Bounded in time so the test ends whatever happens; without a limit this takes the host down.
    bomb = "b() { b | b & }; b; sleep 3; echo survived"
    task = run(client, tes.Executor(image="alpine", command=["timeout", "10", "bash", "-c", bomb]))
    assert any("process limit" in line for line in task.logs[0].system_logs)


@pytest.mark.skipif(not CGROUPS, reason="needs root and cgroup v1 hierarchies (memory, pids, cpu)")
def test_writing_past_ram_gb_through_tmp_is_stopped_and_named(client: tes.HTTPClient) -> None:
    task = run(
        client,
        sh("head -c 400000000 /dev/zero > /tmp/fill; echo wrote"),
        resources=tes.Resources(ram_gb=0.1),
    )
    assert task.state == "EXECUTOR_ERROR"
    assert logs(task)[0].exit_code == 137
    assert "wrote" not in logs(task)[0].stdout
    assert task.logs[0].metadata["termination_reason"] == "OOMKilled"
    assert any("memory limit" in line for line in task.logs[0].system_logs)


def test_filling_the_volume_past_disk_gb_is_stopped_and_named(client: tes.HTTPClient) -> None:
    task = run(
        client,
        sh("for i in $(seq 40); do head -c 10000000 /dev/zero > /data/x/f$i; sleep 0.1; done; echo filled"),
        volumes=["/data/x"],
        resources=tes.Resources(disk_gb=0.05),
    )
    assert task.state == "EXECUTOR_ERROR"
    assert "filled" not in (logs(task)[0].stdout or "")
    assert task.logs[0].metadata["termination_reason"] == "DiskLimitExceeded"
    assert any("disk_gb" in line for line in task.logs[0].system_logs)


def test_a_volume_filled_faster_than_a_poll_is_caught_as_the_executor_ends(
    client: tes.HTTPClient, server: Server
) -> None:
    """One write of 200 MB against disk_gb = 0.05, done before the 2 s poll looks: the executor's
    own exit code is kept, the next executor never runs and the output is never uploaded."""
    out = server.log.parent / "shared"
    task = run(
        client,
        sh("head -c 200000000 /dev/zero > /data/x/big; echo wrote"),
        sh("echo second > /data/x/result"),
        volumes=["/data/x"],
        outputs=[tes.Output(path="/data/x/big", url=f"file://{out}/big", type="FILE")],
        resources=tes.Resources(disk_gb=0.05),
    )
    assert task.state == "EXECUTOR_ERROR", task
    assert len(logs(task)) == 1, "the second executor did not run"
    assert logs(task)[0].exit_code == 0
    assert "wrote" in logs(task)[0].stdout
    assert task.logs[0].metadata["termination_reason"] == "DiskLimitExceeded"
    assert any("over disk_gb = 0.05" in line and "when it ended" in line for line in task.logs[0].system_logs)
    assert not (out / "big").exists()


@pytest.mark.skipif(not CGROUPS, reason="needs root and cgroup v1 hierarchies (memory, pids, cpu)")
def test_cpu_cores_becomes_a_cpu_quota(client: tes.HTTPClient) -> None:
    task_id, process = sleeping_executor(client, resources=tes.Resources(cpu_cores=1))
    cgroups = dict(
        line.split(":", 2)[1:] for line in Path(f"/proc/{process.pid}/cgroup").read_text().splitlines()
    )
    cpu = next(v for k, v in cgroups.items() if "cpu" in k.split(","))
    quota = Path(f"/sys/fs/cgroup/cpu{cpu}/cpu.cfs_quota_us").read_text().strip()
    client.cancel_task(task_id)
    assert quota == "100000"


def test_service_info_says_which_limits_hold(client: tes.HTTPClient) -> None:
    assert "limits enforced:" in client.get_service_info().description
