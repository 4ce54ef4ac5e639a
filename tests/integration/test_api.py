"""The REST API as TES clients meet it: a real server process, py-tes and plain HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
import tes
from tes.utils import unmarshal

from tests.conftest import fresh_postgres_url_sync
from tests.support.server import Server, running_server

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per database for the module; tests keep apart through unique names and tags."""
    tmp = tmp_path_factory.mktemp("api")
    if request.param == "sqlite":
        command, url = "serve", f"sqlite:///{tmp / 'poiesis.db'}"
    else:
        pg = request.getfixturevalue("postgres_server")
        command, url = "api", fresh_postgres_url_sync(pg, request.getfixturevalue("postgres_template"))
    # backend none: this module checks what the API stores and shows, with tasks left QUEUED
    env = {
        "POIESIS_BACKEND": "none",
        "POIESIS_BACKEND_PARAMETERS": "Queue",
        "POIESIS_STORAGE": "s3://bucket/,file:///data/",
    }
    with running_server(command, url, tmp, env) as s:
        yield s


@pytest.fixture
def client(server: Server) -> tes.HTTPClient:
    return tes.HTTPClient(server.url, timeout=10)


def a_task(name: str = "hello", **fields: object) -> tes.Task:
    return tes.Task(
        name=name,
        executors=[tes.Executor(image="alpine", command=["echo", "hi"], stdout="/out/log")],
        **fields,
    )


def test_create_get_in_every_view_and_cancel_with_py_tes(client: tes.HTTPClient) -> None:
    task_id = client.create_task(
        a_task(
            inputs=[tes.Input(path="/in/a", content="x" * (1024 * 1024 + 1))],
            outputs=[tes.Output(path="/out/*.txt", path_prefix="/out/", url="s3://bucket/run/")],
            resources=tes.Resources(cpu_cores=1, ram_gb=0.5, backend_parameters={"queue": "q", "Other": "x"}),
            tags={"project": "p", "empty": ""},
        )
    )
    minimal = client.get_task(task_id, view="MINIMAL")
    assert (minimal.id, minimal.state, minimal.executors) == (task_id, "QUEUED", None)
    basic = client.get_task(task_id, view="BASIC")
    assert basic.inputs[0].content is None
    assert basic.inputs[0].type == "FILE"
    assert basic.tags == {"project": "p", "empty": ""}
    assert basic.resources.backend_parameters == {"queue": "q"}
    full = client.get_task(task_id, view="FULL")
    assert len(full.inputs[0].content) == 1024 * 1024 + 1
    assert full.logs[0].system_logs == ["unsupported backend_parameters ignored: Other"]
    client.cancel_task(task_id)
    assert client.get_task(task_id, view="MINIMAL").state == "CANCELED"
    client.cancel_task(task_id)  # idempotent on a terminal task
    assert client.get_task(task_id, view="MINIMAL").state == "CANCELED"


def test_service_info_parses_with_py_tes(client: tes.HTTPClient) -> None:
    info = client.get_service_info()
    assert info.type == {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"}
    assert info.organization["url"].startswith("https://")
    assert info.storage == ["s3://bucket/", "file:///data/"]
    assert info.tes_resources_backend_parameters == ["Queue"]


def test_list_every_filter_and_across_pages(client: tes.HTTPClient, server: Server) -> None:
    suite = uuid.uuid4().hex
    ids = [
        client.create_task(a_task(f"{suite}-{i}", tags={"run": str(i % 2), "suite": suite})) for i in range(7)
    ]
    other = client.create_task(a_task(f"other-{suite}", tags={"suite": suite}))

    # py-tes pages through everything the server holds: newest first, no task twice, none skipped.
    seen: list[str] = []
    token = None
    while True:
        page = client.list_tasks(view="BASIC", page_size=3, page_token=token)
        assert 0 < len(page.tasks) <= 3
        seen.extend(t.id for t in page.tasks)
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(set(seen), reverse=True)
    assert [i for i in seen if i in {*ids, other}] == [other, *reversed(ids)]

    def listed(params: list[tuple[str, str]]) -> list[str]:
        response = httpx.get(
            f"{server.tes}/tasks", params=[("tag_key", "suite"), ("tag_value", suite), *params]
        )
        assert response.status_code == 200, response.text
        return [t.id for t in unmarshal(response.json(), tes.ListTasksResponse).tasks]

    assert listed([("name_prefix", f"{suite}-")]) == list(reversed(ids))
    assert listed([("tag_key", "run"), ("tag_value", "1")]) == [ids[5], ids[3], ids[1]]
    assert listed([("tag_key", "run")]) == list(reversed(ids))
    client.cancel_task(ids[0])
    assert listed([("state", "CANCELED")]) == [ids[0]]
    assert listed([("state", "QUEUED"), ("name_prefix", "other-")]) == [other]
    paged = httpx.get(
        f"{server.tes}/tasks", params=[("tag_key", "suite"), ("tag_value", suite), ("page_size", "5")]
    )
    first = unmarshal(paged.json(), tes.ListTasksResponse)
    rest = httpx.get(
        f"{server.tes}/tasks",
        params=[("tag_key", "suite"), ("tag_value", suite), ("page_token", first.next_page_token)],
    ).json()
    assert len(first.tasks) == 5
    assert len(rest["tasks"]) == 3
    assert "next_page_token" not in rest
    full = httpx.get(f"{server.tes}/tasks", params={"view": "FULL", "page_size": "1"}).json()
    assert set(full) == {"tasks", "next_page_token"}
    assert unmarshal(full, tes.ListTasksResponse).tasks[0].executors[0].image == "alpine"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        pytest.param("POST", "/tasks", b"{not json", 400, "body", id="malformed JSON"),
        pytest.param("POST", "/tasks", b'{"name": "x"}', 400, "executors", id="missing executors"),
        pytest.param(
            "POST",
            "/tasks",
            b'{"executors": [{"image": "a", "command": ["x"], "workdir": "rel"}]}',
            400,
            "executors[0].workdir",
            id="relative path",
        ),
        pytest.param(
            "POST",
            "/tasks",
            b'{"executors": [{"image": "a", "command": ["x"]}], "outputs": '
            b'[{"path": "/o/*", "url": "s3://b/"}]}',
            400,
            "outputs[0].path_prefix",
            id="wildcard",
        ),
        pytest.param(
            "POST",
            "/tasks",
            b'{"executors": [{"image": "a", "command": ["x"]}], "resources": '
            b'{"backend_parameters": {"Nope": "1"}, "backend_parameters_strict": true}}',
            400,
            "resources.backend_parameters.Nope",
            id="strict backend parameter",
        ),
        pytest.param("GET", "/tasks?view=EVERYTHING", None, 400, "view", id="unknown view"),
        pytest.param("GET", "/tasks?state=DONE", None, 400, "state", id="unknown state"),
        pytest.param("GET", "/tasks?page_size=0", None, 400, "page_size", id="page size zero"),
        pytest.param("GET", "/tasks?page_size=many", None, 400, "page_size", id="page size not a number"),
        pytest.param("GET", "/tasks?page_token=forged", None, 400, "page_token", id="forged page token"),
        pytest.param("GET", "/tasks/01arz3ndektsv4rrffq69g5fav", None, 404, None, id="unknown task"),
        pytest.param(
            "POST", "/tasks/01arz3ndektsv4rrffq69g5fav:cancel", None, 404, None, id="cancel unknown"
        ),
        pytest.param("POST", "/tasks/01arz3ndektsv4rrffq69g5fav:pause", None, 404, None, id="unknown verb"),
    ],
)
def test_bad_requests_get_one_error_body_naming_the_field(
    server: Server, method: str, path: str, body: bytes | None, status: int, field: str | None
) -> None:
    headers = {"Content-Type": "application/json"} if method == "POST" else {}
    response = httpx.request(method, server.tes + path, content=body, headers=headers)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["status_code"] == status
    assert error["msg"]
    assert error.get("field") == field


def test_a_20_mb_body_is_refused_and_the_server_goes_on(server: Server) -> None:
    response = httpx.post(
        f"{server.tes}/tasks", content=b"x" * (20 * 1024 * 1024), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["status_code"] == 413
    assert httpx.get(f"{server.tes}/service-info").status_code == 200


def test_health_readiness_and_openapi(server: Server) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    spec = httpx.get(f"{server.url}/openapi/openapi.json").json()
    assert "/ga4gh/tes/v1/tasks" in spec["paths"]


@pytest.mark.parametrize(
    "ref",
    ["%00", "a%00b", "01arz3ndektsv4rrffq69g5fav%0A", "01ARZ3NDEKTSV4RRFFQ69G5FAV", "x" * 20_000],
    ids=["nul", "nul inside", "id and newline", "upper case", "20,000 characters"],
)
def test_a_reference_that_is_no_task_id_is_not_found_on_every_path(server: Server, ref: str) -> None:
    """GET (the plain-ASGI route, and Litestar's with another query parameter) and cancel: 404 with
    the JSON error body, the reference shown at most 100 characters long; never a 500 from the
    database refusing a NUL byte."""
    for method, path in (
        ("GET", f"/tasks/{ref}"),
        ("GET", f"/tasks/{ref}?view=FULL&ignored=1"),
        ("POST", f"/tasks/{ref}:cancel"),
    ):
        r = httpx.request(method, server.tes + path, headers={"Content-Type": "application/json"})
        assert r.status_code == 404, (method, path[:60], r.text[:200])
        assert r.json()["status_code"] == 404
        assert len(r.json()["msg"]) < 130


def test_the_short_paths_nextflow_uses_by_default_serve_the_same_tasks(server: Server) -> None:
    """nf-ga4gh's default endpoint is the server's root with `/v1/tasks` (Funnel's paths)."""
    body = {"executors": [{"image": "alpine", "command": ["true"]}], "tags": {"via": "v1"}}
    created = httpx.post(f"{server.url}/v1/tasks", json=body, timeout=10)
    assert created.status_code == 200, created.text
    task_id = created.json()["id"]
    assert httpx.get(f"{server.tes}/tasks/{task_id}?view=BASIC", timeout=10).json()["tags"] == {"via": "v1"}
    assert httpx.get(f"{server.url}/v1/tasks/{task_id}?view=MINIMAL", timeout=10).json()["id"] == task_id
    listed = httpx.get(f"{server.url}/v1/tasks", params={"tag_key": "via", "tag_value": "v1"}, timeout=10)
    assert task_id in [t["id"] for t in listed.json()["tasks"]]
    assert httpx.get(f"{server.url}/v1/service-info", timeout=10).json()["type"]["artifact"] == "tes"
    cancel = httpx.post(f"{server.url}/v1/tasks/{task_id}:cancel", timeout=10)
    assert cancel.status_code == 200
    assert httpx.get(f"{server.url}/v1/tasks/{task_id}", timeout=10).json()["state"] == "CANCELED"
    assert httpx.get(f"{server.url}/v1x/tasks", timeout=10).status_code == 404
    document = httpx.get(f"{server.url}/openapi/openapi.json", timeout=10).json()
    assert all(path.startswith("/ga4gh/tes/v1/") for path in document["paths"]), "the canonical paths only"


@pytest.mark.parametrize("path", ["/ga4gh/tes/v1/tasks", "/v1/tasks"])
def test_a_create_retried_with_its_idempotency_key_answers_the_first_task(server: Server, path: str) -> None:
    """Both doors (the fast route and the framework's) keep the key: a retry with the same body
    names the first task and makes none; another body under the key is a 422; a bad key a 400."""
    body = {"name": f"idem-{uuid.uuid4().hex}", "executors": [{"image": "alpine", "command": ["true"]}]}
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = httpx.post(server.url + path, json=body, headers=key, timeout=10)
    again = httpx.post(server.url + path, json=body, headers=key, timeout=10)
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert first.json() == again.json()
    listed = httpx.get(f"{server.tes}/tasks", params={"name_prefix": body["name"]}).json()["tasks"]
    assert [t["id"] for t in listed] == [first.json()["id"]]
    other = httpx.post(server.url + path, json=body | {"description": "changed"}, headers=key, timeout=10)
    assert other.status_code == 422
    assert other.json()["field"] == "Idempotency-Key"
    assert first.json()["id"] in other.json()["msg"]
    for bad in (b"", b"x" * 256, "caf\u00e9".encode(), b"a\tb"):
        refused = httpx.post(server.url + path, json=body, headers={b"Idempotency-Key": bad}, timeout=10)
        assert refused.status_code == 400, bad
        assert refused.json()["field"] == "Idempotency-Key"
    # Without a key, each create is its own task.
    plain = [httpx.post(server.url + path, json=body, timeout=10).json()["id"] for _ in range(2)]
    assert len(set(plain)) == 2
