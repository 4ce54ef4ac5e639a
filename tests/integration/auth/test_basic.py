"""Basic authentication through a real server process, py-tes and the `poiesis users` command."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tes

from tests.support.server import Server, running_server

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TASK = {"executors": [{"image": "alpine", "command": ["true"]}]}


def users(path: Path, *args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "poiesis.entrypoints.cli", "users", *args, "--file", str(path)],
        input=None if password is None else password + "\n",
        capture_output=True,
        text=True,
        env=os.environ | {"POIESIS_LOG_FORMAT": "text"},
        check=False,
    )


@pytest.fixture(scope="module")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("users") / "users"
    for name, password in (("alice", "alice-password"), ("root", "root-password")):
        assert users(path, "add", name, "--password-stdin", password=password).returncode == 0
    return path


@pytest.fixture(scope="module")
def server(users_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("basic")
    env = {
        "POIESIS_BACKEND": "none",
        "POIESIS_AUTH": "basic",
        "POIESIS_BASIC_USERS_FILE": str(users_file),
        "POIESIS_BASIC_ADMINS": "root",
    }
    with running_server("api", f"sqlite:///{tmp / 'p.db'}", tmp, env) as s:
        yield s


def test_py_tes_with_user_and_password(server: Server) -> None:
    client = tes.HTTPClient(server.url, user="alice", password="alice-password")
    task_id = client.create_task(tes.Task(executors=[tes.Executor(image="alpine", command=["true"])]))
    assert client.get_task(task_id, view="FULL").logs[0].metadata == {"owner": "alice"}
    client.cancel_task(task_id)
    assert client.get_task(task_id).state == "CANCELED"
    root = tes.HTTPClient(server.url, user="root", password="root-password")
    assert task_id in [t.id for t in root.list_tasks().tasks]


@pytest.mark.parametrize(
    "auth",
    [
        pytest.param(("alice", "wrong-password"), id="wrong password"),
        pytest.param(("mallory", "alice-password"), id="unknown user"),
    ],
)
def test_bad_credentials_are_401_with_a_basic_challenge(server: Server, auth: tuple[str, str]) -> None:
    response = httpx.post(f"{server.tes}/tasks", json=TASK, auth=auth)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="poiesis", charset="UTF-8"'
    assert response.json() == {"msg": "wrong user name or password", "status_code": 401}
    assert auth[1] not in server.log.read_text()


def test_a_users_file_changed_while_running(server: Server, users_file: Path) -> None:
    assert httpx.get(f"{server.tes}/tasks", auth=("carol", "carol-password")).status_code == 401
    assert users(users_file, "add", "carol", "--password-stdin", password="carol-password").returncode == 0
    assert httpx.get(f"{server.tes}/tasks", auth=("carol", "carol-password")).status_code == 200
    removed = users(users_file, "remove", "carol")
    assert removed.returncode == 0, removed.stderr
    assert httpx.get(f"{server.tes}/tasks", auth=("carol", "carol-password")).status_code == 401
    assert "carol" not in users(users_file, "list").stdout
    assert users(users_file, "remove", "carol").returncode == 1


def test_the_users_command_refuses_bad_names_and_short_passwords(tmp_path: Path) -> None:
    path = tmp_path / "users"
    bad = users(path, "add", "a:b", "--password-stdin", password="long-enough")
    assert bad.returncode == 2
    assert "no ':'" in bad.stderr
    short = users(path, "add", "dave", "--password-stdin", password="short")
    assert short.returncode == 2
    assert "8 characters" in short.stderr
    assert not path.exists()


@pytest.mark.parametrize("command", ["api", "serve"])
def test_no_authentication_on_a_public_address_refuses_to_start(command: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "poiesis.entrypoints.cli", command],
        env=os.environ
        | {"POIESIS_HOST": "0.0.0.0", "POIESIS_DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "allow_anonymous" in result.stderr
    assert "not a loopback address" in result.stderr
