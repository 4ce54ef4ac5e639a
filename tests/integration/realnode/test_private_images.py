"""Private images on the real node: a registry (distribution's) in the node's namespace asks for a
password, a task image is pushed to it, and only the tasks of the owner the operator gave its pull
Secret (`owner_image_pull_secrets`) run it; another user's task ends at once with the registry's
"unauthorized", though the node holds the image already (`executor_image_pull_policy = "Always"`)."""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import tes
from kubernetes import client

from tests.conftest import fresh_postgres_url_sync
from tests.integration.realnode.test_taskpods import namespace, tctl
from tests.support.realnode import database_secret, image_archive, private_registry, push, write_config
from tests.support.server import add_users, running_server
from tests.support.tasks import wait_ended

pytestmark = [pytest.mark.postgres, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@dataclass
class Lab:
    alice: tes.HTTPClient
    bob: tes.HTTPClient
    image: str
    core: Any
    namespace: str


@pytest.fixture(scope="module")
def lab(
    real_api: client.ApiClient,
    real_kubeconfig: str,
    api_server: str,
    postgres_server: str,
    postgres_template: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Lab]:
    core: Any = client.CoreV1Api(real_api)
    work = tmp_path_factory.mktemp("private")
    registry_password = secrets.token_urlsafe(12)
    with private_registry(work, {"lab-a": registry_password}) as address:
        image = f"{address}/lab-a/tool:1"
        push(image_archive("busybox"), image, "lab-a", registry_password)
        database_url = fresh_postgres_url_sync(postgres_server, postgres_template)
        auth = base64.b64encode(f"lab-a:{registry_password}".encode()).decode()
        config_json = json.dumps({"auths": {address: {"auth": auth}}})
        with namespace(core) as space:
            database_secret(core, space, database_url)
            core.create_namespaced_secret(
                space,
                {
                    "metadata": {"name": "lab-a-registry"},
                    "type": "kubernetes.io/dockerconfigjson",
                    "stringData": {".dockerconfigjson": config_json},
                },
            )
            config = write_config(
                work / "poiesis.toml",
                real_kubeconfig,
                space,
                api_server,
                '[kubernetes.owner_image_pull_secrets]\nalice = ["lab-a-registry"]\n'
                "[tctl]\nstart_timeout_seconds = 600\nended_grace_seconds = 5\nresync_seconds = 2\n",
                executor_image_pull_policy="Always",
                ttl_seconds_after_finished=60,
            )
            users = {"alice": secrets.token_urlsafe(12), "bob": secrets.token_urlsafe(12)}
            env = {
                "POIESIS_CONFIG": str(config),
                "POIESIS_LOG_FORMAT": "text",
                "POIESIS_AUTH": "basic",
                "POIESIS_BASIC_USERS_FILE": str(add_users(work / "users", users)),
            }
            with running_server("api", database_url, work, env) as server, tctl(work, env, database_url):
                yield Lab(
                    *(
                        tes.HTTPClient(server.url, user=u, password=users[u], timeout=20)
                        for u in ("alice", "bob")
                    ),
                    image=image,
                    core=core,
                    namespace=space,
                )


def echo(image: str) -> tes.Task:
    return tes.Task(executors=[tes.Executor(image=image, command=["sh", "-c", "echo from the lab image"])])


def test_the_owner_with_the_secret_runs_the_private_image(lab: Lab) -> None:
    task = wait_ended(lab.alice, lab.alice.create_task(echo(lab.image)), 120, every=0.5)
    assert task.state == "COMPLETE", (task.logs[0].logs, task.logs[0].system_logs)
    assert task.logs[0].logs[0].stdout.strip() == "from the lab image"


def test_another_users_task_is_refused_by_the_registry_at_once(lab: Lab) -> None:
    # The node holds the image since alice's task; Always asks the registry again, as bob.
    posted = time.monotonic()
    task = wait_ended(lab.bob, lab.bob.create_task(echo(lab.image)), 120, every=0.5)
    took = time.monotonic() - posted
    assert task.state == "SYSTEM_ERROR", task
    line = " ".join(task.logs[0].system_logs)
    assert "401 Unauthorized" in line or "unauthorized" in line.lower(), line
    assert "(for 600 s)" not in line, "ended at once, not after the start timeout"
    print(f"[private] another user's task: SYSTEM_ERROR after {took:.1f} s")


def test_a_tag_the_private_registry_lacks_ends_at_once_saying_so(lab: Lab) -> None:
    missing = lab.image.rsplit(":", 1)[0] + ":no-such-tag"
    task = wait_ended(lab.alice, lab.alice.create_task(echo(missing)), 120, every=0.5)
    assert task.state == "SYSTEM_ERROR", task
    assert "not found" in " ".join(task.logs[0].system_logs)
