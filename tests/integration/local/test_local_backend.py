"""`poiesis serve` runs real tasks: py-tes submits, the local backend stages, runs and uploads."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tes

from tests.support import storage
from tests.support.server import Server, running_server
from tests.support.tasks import sleepers, wait_ended

TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"}

if not Path("/usr/bin/bwrap").exists():
    pytest.skip(
        "bubblewrap is not installed: run scripts/test, or apt-get install bubblewrap",
        allow_module_level=True,
    )


class Env:
    def __init__(self, root: Path, s3: storage.S3, http: storage.Http) -> None:
        self.root = root
        self.shared = root / "shared"
        self.shared.mkdir()
        # Outside pytest's private temporary tree: the sandbox's user must pass through its parents.
        self.workspaces = Path(tempfile.mkdtemp(prefix="poiesis-ws-", dir="/tmp"))
        self.workspaces.chmod(0o711)
        self.s3 = s3
        self.http = http
        endpoints = root / "endpoints.toml"
        endpoints.write_text(s3.endpoints())
        self.vars = {
            "POIESIS_BACKEND": "local",
            "POIESIS_LOCAL_RUNTIME": "bwrap",
            "POIESIS_LOCAL_WORKSPACES": str(self.workspaces),
            "POIESIS_LOCAL_MAX_TASKS": "8",
            "POIESIS_FILE_ROOTS": str(self.shared),
            "POIESIS_STORAGE_ENDPOINTS_FILE": str(endpoints),
            "POIESIS_FILER_RETRY_SECONDS": "2",
            "POIESIS_LOG_FORMAT": "text",
        }


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, s3_server: storage.S3, http: storage.Http) -> Env:
    return Env(tmp_path_factory.mktemp("local"), s3_server, http)


@pytest.fixture(scope="module")
def server(env: Env) -> Iterator[Server]:
    with running_server("serve", f"sqlite:///{env.root / 'tes.db'}", env.root, env.vars) as running:
        yield running
    shutil.rmtree(env.workspaces, ignore_errors=True)


@pytest.fixture(scope="module")
def client(server: Server) -> tes.HTTPClient:
    return tes.HTTPClient(server.url, timeout=10)


def run(client: tes.HTTPClient, task: tes.Task, timeout: float = 60) -> tes.Task:
    return wait_ended(client, client.create_task(task), timeout)


def executor(*command: str, **fields: object) -> tes.Executor:
    return tes.Executor(image="alpine", command=list(command), **fields)


def sh(script: str, **fields: object) -> tes.Executor:
    return executor("sh", "-c", script, **fields)


def test_two_executors_share_a_volume(client: tes.HTTPClient, env: Env) -> None:
    task = run(
        client,
        tes.Task(
            executors=[sh("echo from-first > /data/shared/x"), executor("cat", "/data/shared/x")],
            volumes=["/data/shared"],
        ),
    )
    assert task.state == "COMPLETE"
    logs = task.logs[0].logs
    assert [log.exit_code for log in logs] == [0, 0]
    assert logs[1].stdout == "from-first\n"
    assert logs[0].start_time <= logs[0].end_time <= logs[1].start_time <= logs[1].end_time
    assert not (env.workspaces / task.id).exists()  # the workspace is removed when the task ends


def test_stdin_stdout_and_stderr_files(client: tes.HTTPClient, env: Env) -> None:
    task = run(
        client,
        tes.Task(
            inputs=[tes.Input(path="/data/in/words.txt", content="b\na\nc\n")],
            executors=[
                executor("sort", stdin="/data/in/words.txt", stdout="/data/out/sorted.txt"),
                sh("echo problem >&2; cat /data/out/sorted.txt", stderr="/data/out/err.txt"),
            ],
            outputs=[
                tes.Output(path="/data/out/sorted.txt", url=f"file://{env.shared}/sorted.txt"),
                tes.Output(path="/data/out/err.txt", url=f"file://{env.shared}/err.txt"),
            ],
        ),
    )
    assert task.state == "COMPLETE", task.logs[0].system_logs
    assert (env.shared / "sorted.txt").read_text() == "a\nb\nc\n"
    assert (env.shared / "err.txt").read_text() == "problem\n"
    logs = task.logs[0].logs
    assert logs[0].stdout == "a\nb\nc\n"  # the tail is kept even when the stream goes to a file
    assert logs[1].stderr == "problem\n"


def test_env_and_workdir(client: tes.HTTPClient) -> None:
    task = run(
        client,
        tes.Task(
            executors=[
                sh('pwd; echo "$GREETING"; touch made-here', workdir="/data/work", env={"GREETING": "hi"})
            ],
            volumes=["/data/work"],
        ),
    )
    assert task.state == "COMPLETE"
    assert task.logs[0].logs[0].stdout == "/data/work\nhi\n"


def test_a_command_that_does_not_exist_gets_a_log_with_a_non_zero_code(client: tes.HTTPClient) -> None:
    task = run(client, tes.Task(executors=[executor("no-such-program-anywhere", "--flag")]))
    assert task.state == "EXECUTOR_ERROR"
    log = task.logs[0].logs[0]
    assert log.exit_code != 0
    assert "no-such-program-anywhere" in log.stderr


def test_inputs_from_content_file_http_and_s3(client: tes.HTTPClient, env: Env) -> None:
    (env.shared / "local.txt").write_text("from-file\n")
    (env.http.root / "web.txt").write_text("from-http\n")
    client_s3 = env.s3.client()
    client_s3.create_bucket(Bucket="local-inputs")
    client_s3.put_object(Bucket="local-inputs", Key="dir/s3.txt", Body=b"from-s3\n")
    task = run(
        client,
        tes.Task(
            inputs=[
                tes.Input(path="/data/in/content.txt", content="from-content\n"),
                tes.Input(path="/data/in/file.txt", url=f"file://{env.shared}/local.txt"),
                tes.Input(path="/data/in/web.txt", url=f"{env.http.base}/web.txt"),
                tes.Input(path="/data/in/s3.txt", url="s3://local-inputs/dir/s3.txt"),
            ],
            executors=[
                executor(
                    "cat", "/data/in/content.txt", "/data/in/file.txt", "/data/in/web.txt", "/data/in/s3.txt"
                )
            ],
        ),
    )
    assert task.state == "COMPLETE", task.logs[0].system_logs
    assert task.logs[0].logs[0].stdout == "from-content\nfrom-file\nfrom-http\nfrom-s3\n"


def test_wildcard_outputs_to_s3_with_path_prefix_and_sizes(client: tes.HTTPClient, env: Env) -> None:
    s3 = env.s3.client()
    s3.create_bucket(Bucket="local-outputs")
    task = run(
        client,
        tes.Task(
            executors=[
                sh("mkdir -p /data/out/sub && printf 1 > /data/out/a.txt && printf 22 > /data/out/b.txt")
            ],
            outputs=[
                tes.Output(path="/data/out/*.txt", url="s3://local-outputs/run/", path_prefix="/data/out/")
            ],
        ),
    )
    assert task.state == "COMPLETE", task.logs[0].system_logs
    listed = s3.list_objects_v2(Bucket="local-outputs", Prefix="run/")["Contents"]
    assert sorted((o["Key"], o["Size"]) for o in listed) == [("run/a.txt", 1), ("run/b.txt", 2)]
    outputs = sorted((o.url, o.path, int(o.size_bytes)) for o in task.logs[0].outputs)
    assert outputs == [
        ("s3://local-outputs/run/a.txt", "/data/out/a.txt", 1),
        ("s3://local-outputs/run/b.txt", "/data/out/b.txt", 2),
    ]


def test_an_input_that_404s_is_a_system_error_naming_it(client: tes.HTTPClient, env: Env) -> None:
    url = f"{env.http.base}/not-there.txt"
    task = run(
        client, tes.Task(inputs=[tes.Input(path="/data/in/x.txt", url=url)], executors=[executor("true")])
    )
    assert task.state == "SYSTEM_ERROR"
    assert any(
        line.startswith(f"input 0 (/data/in/x.txt) from {url}: not found")
        for line in task.logs[0].system_logs
    )
    assert not task.logs[0].logs  # no executor ran
    deadline = time.monotonic() + 10  # removed right after the state is written
    while (env.workspaces / task.id).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (env.workspaces / task.id).exists(), "a failed input left its workspace"


def test_fifty_tasks_at_once_all_finish_correctly(client: tes.HTTPClient) -> None:
    ids = [
        client.create_task(
            tes.Task(
                executors=[
                    sh(f"echo {n} > /data/v/n"),
                    sh("cat /data/v/n; exit $(( $(cat /data/v/n) % 2 ))"),
                ],
                volumes=["/data/v"],
            )
        )
        for n in range(50)
    ]
    deadline = time.monotonic() + 180
    tasks: dict[str, tes.Task] = {}
    while len(tasks) < len(ids):
        assert time.monotonic() < deadline, f"{len(tasks)} of {len(ids)} finished"
        for task_id in ids:
            if task_id not in tasks:
                got = client.get_task(task_id, view="FULL")
                if got.state in TERMINAL:
                    tasks[task_id] = got
        time.sleep(0.2)
    for n, task_id in enumerate(ids):
        task = tasks[task_id]
        assert task.state == ("COMPLETE" if n % 2 == 0 else "EXECUTOR_ERROR")
        assert [log.exit_code for log in task.logs[0].logs] == [0, n % 2]
        assert task.logs[0].logs[1].stdout == f"{n}\n"


def test_a_task_in_flight_when_the_server_is_killed_ends_as_system_error(env: Env, tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'restart.db'}"
    with running_server("serve", database, tmp_path, env.vars) as first:
        client = tes.HTTPClient(first.url, timeout=10)
        task_id = client.create_task(tes.Task(executors=[executor("sleep", "600.456")]))
        deadline = time.monotonic() + 30
        while client.get_task(task_id).state != "RUNNING" or not sleepers("600.456"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait()
    deadline = time.monotonic() + 10
    while sleepers("600.456"):  # the sandbox dies with its parent
        assert time.monotonic() < deadline, "the executor outlived the server"
        time.sleep(0.1)
    with running_server("serve", database, tmp_path, env.vars) as second:
        task = tes.HTTPClient(second.url, timeout=10).get_task(task_id, view="FULL")
    assert task.state == "SYSTEM_ERROR"
    assert "the server stopped while this task was running; its progress is lost" in task.logs[0].system_logs


def test_a_nextflow_shaped_task_with_plain_paths_completes_in_its_work_dir(
    client: tes.HTTPClient, env: Env
) -> None:
    """What Nextflow's TES executor sends without `-w s3://...`: the work dir as plain paths (the
    spec's `/path/to/my/file`), inside `file_roots`, its `.command.run` run by bash."""
    work = env.shared / "work" / "ab" / "cdef0123 with space%20"
    work.mkdir(parents=True)
    (work / ".command.sh").write_text("echo hello from nextflow > out.txt\n")
    (work / ".command.run").write_text(
        'cd "$(dirname "$0")"; sh .command.sh > .command.out; echo $? > .exitcode\n'
    )
    task = run(
        client,
        tes.Task(
            inputs=[
                tes.Input(path=f"{work}/.command.run", url=f"{work}/.command.run"),
                tes.Input(path=f"{work}/.command.sh", url=f"{work}/.command.sh"),
            ],
            outputs=[
                tes.Output(path=f"{work}/out.txt", url=f"{work}/out.txt"),
                tes.Output(path=f"{work}/.exitcode", url=f"{work}/.exitcode"),
            ],
            executors=[tes.Executor(image="alpine", command=["sh", f"{work}/.command.run"])],
        ),
    )
    assert task.state == "COMPLETE", task.logs[0].system_logs
    assert (work / ".exitcode").read_text().strip() == "0"
    assert (work / "out.txt").read_text() == "hello from nextflow\n"
    assert {f.url for f in task.logs[0].outputs} == {f"{work}/out.txt", f"{work}/.exitcode"}
    # A plain path outside file_roots is refused at the door, as a file:// URL is.
    for url in ("/etc/passwd", "file:///etc/passwd", f"file://{env.shared}/../../etc/passwd"):
        body = {
            "inputs": [{"path": "/data/in/passwd", "url": url}],
            "executors": [{"image": "alpine", "command": ["true"]}],
        }
        outside = httpx.post(f"{client.url}/ga4gh/tes/v1/tasks", json=body, timeout=10)
        assert outside.status_code == 400, (url, outside.text)
        assert outside.json()["field"] == "inputs[0].url"
    # A link inside the root that leaves it passes the door (a name) and is refused where it is followed.
    (env.shared / "to-etc").symlink_to("/etc")
    linked = run(
        client,
        tes.Task(
            inputs=[tes.Input(path="/data/in/passwd", url=f"{env.shared}/to-etc/passwd")],
            executors=[tes.Executor(image="alpine", command=["true"])],
        ),
    )
    assert linked.state == "SYSTEM_ERROR"
    assert any("outside the directories" in line for line in linked.logs[0].system_logs)


def test_a_failed_nextflow_step_still_delivers_its_logs_to_the_work_dir(
    client: tes.HTTPClient, env: Env
) -> None:
    """The step exits 1: `.command.err`, `.command.out` and `.exitcode` still reach the work dir (what
    Nextflow's error report shows), the output it never made is no error, the state stays
    EXECUTOR_ERROR and the next executor does not run."""
    work = env.shared / "work" / "fa" / "iled"
    work.mkdir(parents=True)
    script = 'cd "$(dirname "$0")"; echo partial; echo "no such sample" >&2; echo 1 > .exitcode; exit 1'
    (work / ".command.run").write_text(script + "\n")
    names = [".command.out", ".command.err", ".exitcode", "result.bam"]
    task = run(
        client,
        tes.Task(
            inputs=[tes.Input(path=f"{work}/.command.run", url=f"{work}/.command.run")],
            outputs=[tes.Output(path=f"{work}/{n}", url=f"{work}/{n}") for n in names],
            executors=[
                tes.Executor(
                    image="alpine",
                    command=["sh", f"{work}/.command.run"],
                    stdout=f"{work}/.command.out",
                    stderr=f"{work}/.command.err",
                ),
                executor("touch", f"{work}/result.bam"),
            ],
        ),
    )
    assert task.state == "EXECUTOR_ERROR", task.logs[0].system_logs
    assert [log.exit_code for log in task.logs[0].logs] == [1]
    assert (work / ".command.err").read_text() == "no such sample\n"
    assert (work / ".command.out").read_text() == "partial\n"
    assert (work / ".exitcode").read_text() == "1\n"
    assert not (work / "result.bam").exists()
    assert sorted(f.url.rsplit("/", 1)[1] for f in task.logs[0].outputs) == [
        ".command.err",
        ".command.out",
        ".exitcode",
    ]
