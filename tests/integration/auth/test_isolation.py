"""Per-user isolation over the whole API, as a property, on SQLite and PostgreSQL.

Random sequences of users creating, getting (every view), listing (every filter, across small
pages, with and without the owner extension) and cancelling tasks, checked against a model: nobody
ever sees or changes a task that is not theirs, another user's task is a 404 exactly like an
unknown one, and the admin sees and cancels everything.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from poiesis.adapters.auth.basic import write_users
from poiesis.entrypoints.api import create_app
from poiesis.entrypoints.container import ApiContainer
from poiesis.entrypoints.settings import load

USERS = ["alice", "bob", "carol"]
ADMIN = "root"
EVERYONE = [*USERS, ADMIN]
NAMES = ["align", "alpha", "beta"]
TAGS = [{}, {"lab": "a"}, {"lab": "b"}, {"lab": "a", "run": "1"}]
UNKNOWN = "01jzzzzzzzzzzzzzzzzzzzzzzz"
BASE = "/ga4gh/tes/v1"
CHEAP = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)


def header(user: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{user}-password".encode()).decode()}


@dataclass
class Model:
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    cases: int = 0

    def visible(self, user: str, task_id: str) -> bool:
        return user == ADMIN or self.tasks[task_id]["owner"] == user


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[TestClient[Any]]:
    users = tmp_path / "users"
    write_users(users, {u: CHEAP.hash(f"{u}-password") for u in EVERYONE})
    app = create_app(
        ApiContainer(
            settings=load(
                {},
                database_url=database_url,
                backend="none",
                auth=["basic"],
                basic_users_file=str(users),
                basic_admins=[ADMIN],
                migrate_on_start=True,
            )
        )
    )
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client


users = st.sampled_from(EVERYONE)
targets = st.integers(min_value=-1, max_value=200)  # -1: an id nobody has
actions = st.one_of(
    st.tuples(st.just("create"), users, st.sampled_from(NAMES), st.sampled_from(range(len(TAGS)))),
    st.tuples(st.just("get"), users, targets, st.sampled_from(["MINIMAL", "BASIC", "FULL"])),
    st.tuples(
        st.just("list"),
        users,
        st.sampled_from([None, "al", "alpha", "b"]),
        st.sampled_from([None, "QUEUED", "CANCELED"]),
        st.sampled_from([None, ("lab", ""), ("lab", "a"), ("run", "1")]),
        st.integers(min_value=1, max_value=4),
        st.sampled_from([None, *EVERYONE]),
    ),
    st.tuples(st.just("cancel"), users, targets),
)


def pick(model: Model, target: int) -> str:
    ids = sorted(model.tasks)
    return UNKNOWN if target < 0 or not ids else ids[target % len(ids)]


def check(api: TestClient[Any], model: Model, action: tuple[Any, ...]) -> None:
    kind, user = action[0], action[1]
    model.cases += 1
    if kind == "create":
        name, tags = action[2], TAGS[action[3]]
        body = {"name": name, "tags": tags, "executors": [{"image": "alpine", "command": ["true"]}]}
        response = api.post(f"{BASE}/tasks", json=body, headers=header(user))
        assert response.status_code == 200, response.text
        model.tasks[response.json()["id"]] = {"owner": user, "name": name, "tags": tags, "state": "QUEUED"}
    elif kind == "get":
        task_id, view = pick(model, action[2]), action[3]
        response = api.get(f"{BASE}/tasks/{task_id}", params={"view": view}, headers=header(user))
        if task_id in model.tasks and model.visible(user, task_id):
            assert response.status_code == 200, response.text
            assert response.json()["state"] == model.tasks[task_id]["state"]
            if view == "FULL":
                assert response.json()["logs"][0]["metadata"]["owner"] == model.tasks[task_id]["owner"]
        else:
            assert response.status_code == 404
            assert response.json() == {"msg": f"task {task_id!r} not found", "status_code": 404}
    elif kind == "cancel":
        task_id = pick(model, action[2])
        response = api.post(f"{BASE}/tasks/{task_id}:cancel", headers=header(user))
        if task_id in model.tasks and model.visible(user, task_id):
            assert response.status_code == 200, response.text
            model.tasks[task_id]["state"] = "CANCELED"
        else:
            assert response.status_code == 404
    else:
        check_list(api, model, user, *action[2:])


def check_list(
    api: TestClient[Any],
    model: Model,
    user: str,
    prefix: str | None,
    state: str | None,
    tag: tuple[str, str] | None,
    size: int,
    owner: str | None,
) -> None:
    params: dict[str, Any] = {"page_size": size, "view": "BASIC"}
    if prefix:
        params["name_prefix"] = prefix
    if state:
        params["state"] = state
    if tag:
        params |= {"tag_key": tag[0], "tag_value": tag[1]}
    if owner:
        params["owner"] = owner
    if owner and user != ADMIN and owner != user:
        assert api.get(f"{BASE}/tasks", params=params, headers=header(user)).status_code == 403
        return
    scope = owner or (None if user == ADMIN else user)
    expected = {
        task_id
        for task_id, t in model.tasks.items()
        if (scope is None or t["owner"] == scope)
        and (not prefix or t["name"].startswith(prefix))
        and (not state or t["state"] == state)
        and (not tag or (tag[0] in t["tags"] and (not tag[1] or t["tags"][tag[0]] == tag[1])))
    }
    seen: list[str] = []
    token = None
    while True:
        page = api.get(
            f"{BASE}/tasks", params=params | ({"page_token": token} if token else {}), headers=header(user)
        )
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["tasks"]) <= size
        seen.extend(t["id"] for t in body["tasks"])
        token = body.get("next_page_token")
        if not token:
            break
    assert len(seen) == len(set(seen))
    assert set(seen) == expected


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(actions, min_size=1, max_size=12))
def run(api: TestClient[Any], model: Model, steps: list[tuple[Any, ...]]) -> None:
    for action in steps:
        check(api, model, action)


def test_no_user_sees_or_changes_another_users_task(api: TestClient[Any]) -> None:
    model = Model()
    run(api, model)
    assert model.cases > 0
    print(f"isolation cases: {model.cases} requests checked over {len(model.tasks)} tasks")
