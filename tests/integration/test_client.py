"""`poiesis task ...` as a user runs it: a subprocess against a real `poiesis serve` (the local backend
runs the tasks in its sandbox), and against a server with basic authentication."""

from __future__ import annotations

import http.server
import json
import os
import pty
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import Server, basic_api, local_serve

if not Path("/usr/bin/bwrap").exists():
    pytest.skip(
        "bubblewrap is not installed: run scripts/test, or apt-get install bubblewrap",
        allow_module_level=True,
    )

EXIT_EXECUTOR_ERROR, EXIT_CANCELED, EXIT_TIMEOUT = 10, 12, 124


def cli(
    *args: str, url: str | None, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("POIESIS_")}
    environ["HOME"] = environ.get("POIESIS_TEST_HOME", "/nonexistent")
    if url is not None:
        environ["POIESIS_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "poiesis.entrypoints.cli", "task", *args],
        env=environ | (env or {}),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("poiesis: ")
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with local_serve(tmp_path_factory.mktemp("client")) as s:
        yield s


def submit(server: Server, *args: str) -> str:
    result = cli("submit", *args, url=server.url)
    assert result.returncode == 0, result.stderr
    task_id = result.stdout.strip()
    assert len(task_id) == 26, result.stdout
    return task_id


def test_submit_wait_get_and_logs(server: Server) -> None:
    task_id = submit(
        server,
        "--name",
        "greeting",
        "--tag",
        "project=cli",
        "--env",
        "WHO=world",
        "--image",
        "alpine",
        "--",
        "sh",
        "-c",
        'echo "hello $WHO"; echo warning >&2',
    )
    waited = cli("wait", task_id, url=server.url)
    assert waited.returncode == 0, waited.stderr
    assert f"{task_id} COMPLETE" in waited.stderr.splitlines()

    table = cli("get", task_id, url=server.url)
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert any(line.split()[:2] == ["state", "COMPLETE"] for line in lines)
    assert any(line.split()[:2] == ["name", "greeting"] for line in lines)
    assert any(line.split()[:2] == ["tags", "project=cli"] for line in lines)
    row = next(line for line in lines if line.strip().startswith("0 "))
    # index, image, command, exit code, start, end
    cells = row.split("   ")
    assert [c.strip() for c in cells if c.strip()][:2] == ["0", "alpine"]
    assert [c.strip() for c in cells if c.strip()][3] == "0", row

    document = json.loads(cli("get", task_id, "-o", "json", url=server.url).stdout)
    assert document["state"] == "COMPLETE"
    assert document["executors"][0]["env"] == {"WHO": "world"}
    minimal = json.loads(cli("-o", "json", "get", task_id, "--view", "MINIMAL", url=server.url).stdout)
    assert minimal == {"id": task_id, "state": "COMPLETE"}

    assert cli("logs", task_id, url=server.url).stdout == "hello world\n"
    assert cli("logs", task_id, "--stderr", url=server.url).stdout == "warning\n"
    as_json = json.loads(cli("logs", task_id, "-o", "json", url=server.url).stdout)
    assert as_json == [{"executor": 0, "stdout": "hello world\n"}]
    one_line_error(cli("logs", task_id, "-e", "3", url=server.url), "has no executor 3")
    assert cli("logs", task_id, "--system", url=server.url).stdout.strip()


def test_a_task_file_in_yaml_or_json_and_the_exit_status_of_its_end(server: Server, tmp_path: Path) -> None:
    spec = tmp_path / "task.yaml"
    spec.write_text(
        "name: two steps\nexecutors:\n"
        "  - {image: alpine, command: [sh, -c, 'echo first; exit 3']}\n"
        "  - {image: alpine, command: [echo, never]}\n"
    )
    failed = cli("submit", str(spec), "--wait", url=server.url)
    assert failed.returncode == EXIT_EXECUTOR_ERROR, failed.stderr
    task_id = failed.stdout.strip()
    assert cli("logs", task_id, "-e", "0", url=server.url).stdout == "first\n"
    one_line_error(cli("logs", task_id, "-e", "1", url=server.url), "has not run", "EXECUTOR_ERROR")
    document = json.loads(cli("get", task_id, "-o", "json", url=server.url).stdout)
    assert document["logs"][0]["logs"][0]["exit_code"] == 3

    from_stdin = cli(
        "submit",
        "-",
        "--name",
        "piped",
        url=server.url,
        stdin=json.dumps({"executors": [{"image": "alpine", "command": ["true"]}]}),
    )
    assert from_stdin.returncode == 0, from_stdin.stderr
    waited = cli("wait", from_stdin.stdout.strip(), "-o", "json", url=server.url)
    assert waited.returncode == 0
    assert json.loads(waited.stdout) == [{"id": from_stdin.stdout.strip(), "state": "COMPLETE"}]

    spec.write_text("- not\n- a task\n")
    one_line_error(cli("submit", str(spec), url=server.url), "a task is a JSON/YAML object")
    spec.write_text("executors: [unclosed\n")
    one_line_error(cli("submit", str(spec), url=server.url), "neither JSON nor YAML")
    spec.write_text("executors: []\n")
    one_line_error(cli("submit", str(spec), url=server.url), "400", "executors")


def test_cancel_and_wait_report_the_cancellation(server: Server) -> None:
    task_id = submit(server, "--image", "alpine", "--", "sleep", "60")
    deadline = time.monotonic() + 30
    while json.loads(cli("get", task_id, "-o", "json", "--view", "MINIMAL", url=server.url).stdout)[
        "state"
    ] in ("QUEUED", "INITIALIZING"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    timed_out = cli("wait", task_id, "--timeout", "0.5", "--interval", "0.2", url=server.url)
    assert timed_out.returncode == EXIT_TIMEOUT
    assert f"timed out waiting for {task_id}" in timed_out.stderr

    cancelled = cli("cancel", task_id, url=server.url)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.split()[0] == task_id
    assert cancelled.stdout.split()[1] in ("CANCELING", "CANCELED")
    waited = cli("wait", task_id, "--interval", "0.2", url=server.url)
    assert waited.returncode == EXIT_CANCELED
    again = cli("cancel", task_id, "-o", "json", url=server.url)
    assert json.loads(again.stdout) == [{"id": task_id, "state": "CANCELED"}]

    missing = cli("cancel", "01NOSUCHTASK0000000000000", task_id, url=server.url)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "poiesis: task 01NOSUCHTASK0000000000000 not found"
    assert missing.stdout.split() == [task_id, "CANCELED"]


def test_list_filters_pages_and_formats(server: Server) -> None:
    ids = [
        submit(server, "--name", f"batch-{i}", "--tag", f"batch={i % 2}", "--image", "alpine", "--", "true")
        for i in range(5)
    ]
    for task_id in ids:
        assert cli("wait", task_id, url=server.url).returncode == 0

    def listed(*args: str) -> list[dict[str, str]]:
        result = cli("list", "-o", "json", *args, url=server.url)
        assert result.returncode == 0, result.stderr
        return list(json.loads(result.stdout)["tasks"])

    assert [t["id"] for t in listed("--name-prefix", "batch-")] == ids[::-1]
    assert [t["id"] for t in listed("--name-prefix", "batch-", "--tag", "batch=1")] == [ids[3], ids[1]]
    assert {t["id"] for t in listed("--name-prefix", "batch-", "--tag", "batch")} == set(ids)
    assert listed("--name-prefix", "batch-", "--state", "RUNNING") == []
    assert listed("--name-prefix", "batch-", "--view", "MINIMAL")[0] == {"id": ids[-1], "state": "COMPLETE"}

    first = cli("list", "-o", "json", "--name-prefix", "batch-", "--page-size", "2", url=server.url)
    page = json.loads(first.stdout)
    assert [t["id"] for t in page["tasks"]] == ids[:2:-1]
    second = listed("--name-prefix", "batch-", "--page-size", "2", "--page-token", page["next_page_token"])
    assert [t["id"] for t in second] == [ids[2], ids[1]]
    everything = listed("--name-prefix", "batch-", "--page-size", "2", "--all")
    assert [t["id"] for t in everything] == ids[::-1]

    table = cli("list", "--name-prefix", "batch-", "--page-size", "2", url=server.url)
    rows = [line.split() for line in table.stdout.splitlines() if line.strip().startswith(tuple(ids))]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (ids[4], "COMPLETE", "batch-4"),
        (ids[3], "COMPLETE", "batch-3"),
    ]
    assert table.stderr.strip() == f"more: --page-token {page['next_page_token']}"
    empty = cli("list", "--name-prefix", "no-such-", url=server.url)
    assert (empty.returncode, empty.stdout, empty.stderr.strip()) == (0, "", "no tasks")


def test_a_hostile_task_cannot_write_to_the_users_terminal(server: Server) -> None:
    name = "[red]markup[/red] \x1b]0;pwned\x07"
    task_id = submit(server, "--name", name, "--image", "alpine", "--", "printf", r"\033]52;c;cHduZWQ=\a")
    assert cli("wait", task_id, url=server.url).returncode == 0
    table = cli("list", "--name-prefix", "[red]", url=server.url)
    assert "[red]markup[/red]" in table.stdout
    assert "\x1b" not in table.stdout
    assert "\x07" not in table.stdout
    # Piped, the logs are the task's bytes; on a terminal the escapes are defused.
    assert cli("logs", task_id, url=server.url).stdout == "\x1b]52;c;cHduZWQ=\x07\n"
    shown = on_a_terminal(server, "logs", task_id)
    assert "\x1b]52" not in shown
    assert "cHduZWQ=" in shown


def on_a_terminal(server: Server, *args: str) -> str:
    """What the command writes to a terminal (stdout and stderr are the same pseudo-terminal)."""
    primary, secondary = pty.openpty()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("POIESIS_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "poiesis.entrypoints.cli", "task", *args],
        env=environ | {"POIESIS_URL": server.url, "COLUMNS": "120", "TERM": "xterm"},
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=secondary,
    )
    os.close(secondary)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([primary], [], [], 60)
            if not ready:
                break
            try:
                chunk = os.read(primary, 65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(primary)
        process.wait(30)
    return b"".join(chunks).decode(errors="replace")


def test_wait_on_a_terminal_shows_live_progress(server: Server) -> None:
    task_id = submit(server, "--name", "slow", "--image", "alpine", "--", "sh", "-c", "sleep 2")
    shown = on_a_terminal(server, "wait", task_id, "--interval", "0.3")
    assert "ELAPSED" in shown
    assert "EXECUTORS" in shown
    assert "RUNNING" in shown
    assert "COMPLETE" in shown
    assert "0/1" in shown
    assert "1/1" in shown


def test_bad_addresses_and_unknown_tasks_are_one_line(server: Server, tmp_path: Path) -> None:
    from tests.support.postgres import free_port

    nowhere = f"http://127.0.0.1:{free_port()}"
    one_line_error(cli("list", url=nowhere), f"cannot reach {nowhere}", "refused")
    one_line_error(
        cli("get", "01NOSUCHTASK0000000000000", url=server.url), "task 01NOSUCHTASK0000000000000 not found"
    )
    one_line_error(cli("list", url="ftp://127.0.0.1/"), "not an http(s) URL")
    one_line_error(cli("get", "../service-info", url=server.url), "is not a task id")
    one_line_error(cli("list", url=server.url + "/not-tes"), "404")
    one_line_error(cli("submit", str(tmp_path / "missing.json"), url=server.url), "No such file")
    # The API path in the URL is optional.
    assert cli("list", url=server.tes).returncode == 0
    usage = cli("submit", url=server.url)
    assert usage.returncode == 2
    assert "Traceback" not in usage.stderr
    assert "give a task FILE" in usage.stderr
    bad_pair = cli("submit", "--image", "alpine", "--env", "NOEQUALS", "--", "true", url=server.url)
    assert bad_pair.returncode == 2
    assert "'NOEQUALS' is not KEY=VALUE" in bad_pair.stderr


# --- credentials ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    users = {"alice": "alice-password", "bob": "bob-password"}
    with basic_api(tmp_path_factory.mktemp("client-auth"), users) as s:
        yield s


TRUE = ["--image", "alpine", "--", "true"]


def test_credentials_from_flags_environment_and_config_file(guarded: Server, tmp_path: Path) -> None:
    refused = cli("list", url=guarded.url)
    one_line_error(refused, "asks for credentials")

    alice = {"POIESIS_USER": "alice", "POIESIS_PASSWORD": "alice-password"}
    created = cli("submit", *TRUE, url=guarded.url, env=alice)
    assert created.returncode == 0, created.stderr
    task_id = created.stdout.strip()

    config = tmp_path / "client.toml"
    config.write_text(f'url = "{guarded.url}"\nuser = "bob"\npassword = "bob-password"\n')
    config.chmod(0o600)
    bob = {"POIESIS_CLIENT_CONFIG": str(config)}
    # Bob, from the config file, sees none of Alice's tasks.
    assert json.loads(cli("list", "-o", "json", url=None, env=bob).stdout) == {"tasks": []}
    one_line_error(cli("get", task_id, url=None, env=bob), f"task {task_id} not found")
    one_line_error(cli("cancel", task_id, url=None, env=bob), "not found")
    # A flag wins over the file.
    mine = cli(
        "--user", "alice", "list", "-o", "json", url=None, env=bob | {"POIESIS_PASSWORD": "alice-password"}
    )
    assert [t["id"] for t in json.loads(mine.stdout)["tasks"]] == [task_id]

    wrong = cli("list", url=guarded.url, env={"POIESIS_USER": "alice", "POIESIS_PASSWORD": "not-hers"})
    one_line_error(wrong, "asks for credentials")
    no_password = cli("--user", "alice", "list", url=guarded.url)
    one_line_error(no_password, "no password for alice")
    one_line_error(
        cli("--token", "t", "--user", "alice", "list", url=guarded.url), "a token or a user, not both"
    )

    config.chmod(0o644)
    one_line_error(cli("list", url=None, env=bob), "others may read it", "chmod 600")
    config.write_text('url = "x"\nserver = "y"\n')
    one_line_error(cli("list", url=None, env=bob), "unknown key 'server'")
    one_line_error(cli("--config", str(tmp_path / "none.toml"), "list", url=None), "no such file")


class _HostileTes(http.server.BaseHTTPRequestHandler):
    """A TES server that hands out the same page token for ever, and redirects every GET of a task."""

    seen_authorization: list[str] = []

    def do_GET(self) -> None:
        self.seen_authorization.append(self.headers.get("Authorization", ""))
        if self.path.startswith("/ga4gh/tes/v1/tasks/"):
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:9/steal")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps(
            {"tasks": [{"id": "01aaaaaaaaaaaaaaaaaaaaaaaa", "state": "QUEUED"}], "next_page_token": "same"}
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *_: object) -> None:
        pass


def test_a_hostile_server_cannot_loop_the_client_or_redirect_its_credentials() -> None:
    hostile = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HostileTes)
    threading.Thread(target=hostile.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{hostile.server_address[1]}"
    try:
        looping = cli("list", "--all", url=url)
        one_line_error(looping, "repeated a page token")
        redirected = cli("--token", "secret-token", "get", "01aaaaaaaaaaaaaaaaaaaaaaaa", url=url)
        one_line_error(redirected, "302")
    finally:
        hostile.shutdown()
        hostile.server_close()
    # The redirect was not followed (the answer was the 302 itself): the token went to the server named.
    assert _HostileTes.seen_authorization.count("Bearer secret-token") == 1
