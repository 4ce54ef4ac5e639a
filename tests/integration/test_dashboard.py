"""The dashboard in a real headless browser (Chromium through Selenium) against real servers: the local
backend running tasks, and a server with basic authentication."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.browser import chromium, eventually, require_browser, screenshot, send_basic
from tests.support.server import Server, basic_api, local_serve

if not Path("/usr/bin/bwrap").exists():
    pytest.skip("bubblewrap is not installed: run scripts/test", allow_module_level=True)
require_browser()

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where file:// outputs may go."""
    return tmp_path_factory.mktemp("shared")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> Iterator[Server]:
    with local_serve(tmp_path_factory.mktemp("dashboard"), {"POIESIS_FILE_ROOTS": str(shared)}) as s:
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def create(server: Server, task: dict[str, Any], auth: tuple[str, str] | None = None) -> str:
    response = httpx.post(f"{server.tes}/tasks", json=task, auth=auth, timeout=10)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def shell(script: str, **fields: Any) -> dict[str, Any]:
    return {"executors": [{"image": "alpine", "command": ["sh", "-c", script]}], **fields}


def state_of(server: Server, task_id: str, auth: tuple[str, str] | None = None) -> str:
    return str(httpx.get(f"{server.tes}/tasks/{task_id}", auth=auth, timeout=10).json()["state"])


def text(browser: Any, css: str) -> str:
    """The text of the first element matching `css`, read in one step (live parts are replaced)."""
    return str(
        browser.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText.trim() : '';", css
        )
    )


def texts(browser: Any, css: str) -> list[str]:
    return list(
        browser.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.innerText.trim());", css
        )
    )


def rows(browser: Any) -> list[tuple[str, str]]:
    """(name, state) of the list's rows, top to bottom."""
    pairs = browser.execute_script(
        "return Array.from(document.querySelectorAll('tr.task')).map(r =>"
        " [r.querySelector('td a').innerText.trim(), r.querySelector('.state').innerText.trim()]);"
    )
    return [(name, state) for name, state in pairs]


def test_a_running_task_reaches_complete_without_a_reload(server: Server, browser: Any) -> None:
    task_id = create(
        server,
        shell(
            "echo preparing; sleep 3; printf 'result: 42\\n'; echo 'a warning' >&2",
            name="live task",
            description="reaches COMPLETE while the page is open",
            tags={"project": "dashboard"},
        ),
    )
    browser.get(f"{server.url}/ui/tasks/{task_id}")
    assert text(browser, "#name") == "live task"
    eventually(lambda: text(browser, "#state") == "RUNNING", what="RUNNING shown")
    assert text(browser, ".executor .exit") == "running"
    browser.execute_script("window.__samePage = 'yes'")
    screenshot(browser, "task-running")
    eventually(lambda: text(browser, "#state") == "COMPLETE", what="COMPLETE shown without a reload")
    assert browser.execute_script("return window.__samePage") == "yes"
    assert text(browser, ".executor .exit") == "exit 0"
    assert "result: 42" in text(browser, ".executor .stdout")
    assert text(browser, ".executor .stderr") == "a warning"
    assert browser.find_elements(By.ID, "cancel") == []
    assert "project" in text(browser, "#tags")
    assert "bubblewrap" in text(browser, "#system-logs")
    screenshot(browser, "task-complete")


def test_outputs_show_their_sizes(server: Server, browser: Any, shared: Path) -> None:
    task_id = create(
        server,
        shell(
            "head -c 2048 /dev/zero > /tmp/a.bin; echo hi > /tmp/b.txt",
            name="outputs",
            outputs=[
                {"path": "/tmp/a.bin", "url": f"file://{shared}/a.bin", "type": "FILE"},
                {"path": "/tmp/b.txt", "url": f"file://{shared}/b.txt", "type": "FILE"},
            ],
        ),
    )
    browser.get(f"{server.url}/ui/tasks/{task_id}")
    eventually(lambda: text(browser, "#state") == "COMPLETE", what="COMPLETE")
    sizes = texts(browser, "#outputs td.size")
    assert sizes == ["2.0 KiB", "3 bytes"]
    assert (shared / "a.bin").stat().st_size == 2048


def test_cancel_from_the_task_page(server: Server, browser: Any) -> None:
    task_id = create(server, shell("sleep 120", name="to cancel"))
    browser.get(f"{server.url}/ui/tasks/{task_id}")
    eventually(lambda: text(browser, "#state") == "RUNNING", what="RUNNING shown")
    browser.find_element(By.ID, "cancel").click()
    alert = browser.switch_to.alert
    assert alert.text == "Cancel this task?"
    alert.accept()
    eventually(lambda: text(browser, "#state") == "CANCELED", what="CANCELED shown")
    assert state_of(server, task_id) == "CANCELED"
    assert browser.find_elements(By.ID, "cancel") == []


def test_the_list_filters_pages_and_counts(server: Server, browser: Any) -> None:
    ids = [
        create(server, shell("true", name=f"batch-{i}", tags={"group": "even" if i % 2 == 0 else "odd"}))
        for i in range(7)
    ]
    failing = create(server, shell("exit 3", name="batch-failing"))
    for task_id in [*ids, failing]:
        eventually(lambda t=task_id: state_of(server, t) in ("COMPLETE", "EXECUTOR_ERROR"), what="tasks end")

    browser.get(f"{server.url}/ui/")
    browser.find_element(By.NAME, "name_prefix").send_keys("batch-")
    Select(browser.find_element(By.NAME, "state")).select_by_value("COMPLETE")
    browser.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    eventually(lambda: len(rows(browser)) == 7, what="7 COMPLETE rows")
    assert rows(browser) == [(f"batch-{i}", "COMPLETE") for i in range(6, -1, -1)]

    key, value = (
        browser.find_elements(By.NAME, "tag_key")[-1],
        browser.find_elements(By.NAME, "tag_value")[-1],
    )
    key.send_keys("group")
    value.send_keys("odd")
    browser.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    eventually(lambda: len(rows(browser)) == 3, what="the odd ones")
    assert [n for n, _ in rows(browser)] == ["batch-5", "batch-3", "batch-1"]

    browser.get(f"{server.url}/ui/?name_prefix=batch-")
    screenshot(browser, "list")

    # Paging through everything named batch-, three at a time.
    browser.get(f"{server.url}/ui/?name_prefix=batch-&page_size=3")
    seen = []
    while True:
        seen += [n for n, _ in rows(browser)]
        following = browser.find_elements(By.ID, "next")
        if not following:
            break
        following[0].click()
        assert browser.find_elements(By.ID, "first")
    assert seen == ["batch-failing", *(f"batch-{i}" for i in range(6, -1, -1))]

    # The counts are of every task this user may see, by state, and filter when clicked.
    counts = {
        c.get_attribute("data-state"): int(c.find_element(By.TAG_NAME, "b").text)
        for c in browser.find_elements(By.CSS_SELECTOR, "#counts a[data-state]")
    }
    listed = httpx.get(f"{server.tes}/tasks", params={"page_size": 2048}, timeout=10).json()["tasks"]
    expected: dict[str, int] = {}
    for t in listed:
        expected[t["state"]] = expected.get(t["state"], 0) + 1
    assert counts == expected
    browser.find_element(By.CSS_SELECTOR, "#counts a[data-state=EXECUTOR_ERROR]").click()
    assert rows(browser) == [("batch-failing", "EXECUTOR_ERROR")]
    screenshot(browser, "list-by-state")


def test_the_list_follows_running_tasks(server: Server, browser: Any) -> None:
    task_id = create(server, shell("sleep 2", name="follow-me"))
    browser.get(f"{server.url}/ui/?name_prefix=follow-me")
    browser.execute_script("window.__samePage = 'yes'")
    eventually(lambda: rows(browser) == [("follow-me", "COMPLETE")], what="the row turning COMPLETE")
    assert browser.execute_script("return window.__samePage") == "yes"
    assert state_of(server, task_id) == "COMPLETE"


def test_what_a_task_writes_is_shown_as_text_never_run(server: Server, browser: Any) -> None:
    name = "<img src=x onerror=\"document.title='pwned'\">"
    task_id = create(
        server,
        shell(
            "echo \"<script>document.title='pwned'</script>\"; echo '<b>bold</b>' >&2",
            name=name,
            tags={"<i>k</i>": "<svg onload=alert(1)>"},
        ),
    )
    browser.get(f"{server.url}/ui/tasks/{task_id}")
    eventually(lambda: text(browser, "#state") == "COMPLETE", what="COMPLETE")
    assert text(browser, "#name") == name
    assert "<script>document.title='pwned'</script>" in text(browser, ".stdout")
    assert text(browser, ".stderr") == "<b>bold</b>"
    assert browser.find_elements(By.CSS_SELECTOR, "main img, main b, main svg, main i") == []
    browser.get(f"{server.url}/ui/?name_prefix=%3Cimg")
    assert [n for n, _ in rows(browser)] == [name]
    assert browser.title != "pwned"


def test_pages_refuse_framing_inline_script_and_caching(server: Server) -> None:
    for path in ("/ui/", "/ui/tasks/nope", "/ui/static/ui.js"):
        response = httpx.get(server.url + path, timeout=10)
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
    assert httpx.get(server.url + "/ui/", timeout=10).headers["cache-control"] == "no-store"
    assert httpx.get(server.url + "/ui/static/../../etc/passwd", timeout=10).status_code == 404
    assert httpx.get(server.url + "/ui/static/missing.js", timeout=10).status_code == 404
    bad = httpx.get(server.url + "/ui/", params={"state": "DONE"}, timeout=10)
    assert bad.status_code == 400
    assert "state" in bad.text
    assert httpx.get(server.url + "/", timeout=10).headers["location"] == "/ui/"


# --- behind authentication -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    users = {"alice": "alice-password", "bob": "bob-password"}
    with basic_api(tmp_path_factory.mktemp("dashboard-auth"), users) as s:
        yield s


ALICE = ("alice", "alice-password")


def test_without_credentials_nothing_is_shown(guarded: Server, browser: Any) -> None:
    task_id = create(guarded, shell("true", name="alice's secret"), auth=ALICE)
    for path in ("/ui/", f"/ui/tasks/{task_id}", f"/ui/parts/task/{task_id}", "/ui/parts/tasks"):
        response = httpx.get(guarded.url + path, timeout=10)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Basic")
        assert "secret" not in response.text
        assert task_id not in response.text
    with chromium() as fresh:
        fresh.get(f"{guarded.url}/ui/tasks/{task_id}")
        assert "secret" not in fresh.page_source


def test_each_user_sees_only_their_own_tasks(guarded: Server) -> None:
    mine = create(guarded, shell("true", name="alice-task"), auth=ALICE)
    with chromium() as bob:
        send_basic(bob, "bob", "bob-password")
        bob.get(f"{guarded.url}/ui/")
        assert text(bob, "#who") == "bob"
        assert rows(bob) == []
        assert "alice" not in bob.page_source
        bob.get(f"{guarded.url}/ui/?owner=alice")
        assert text(bob, "#error h1") == "403"
        bob.get(f"{guarded.url}/ui/tasks/{mine}")
        assert text(bob, "#error h1") == "404"
        assert "alice-task" not in bob.page_source
        screenshot(bob, "other-users-task")
        # Even by hand, bob's browser cannot cancel it.
        status = bob.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            f"fetch('/ga4gh/tes/v1/tasks/{mine}:cancel', {{method: 'POST', headers: "
            "{'Content-Type': 'application/json'}, body: '{}'}).then(r => done(r.status));"
        )
        assert status == 404
    assert state_of(guarded, mine, auth=ALICE) == "QUEUED"

    with chromium() as alice:
        send_basic(alice, *ALICE)
        alice.get(f"{guarded.url}/ui/?name_prefix=alice-task")
        assert rows(alice) == [("alice-task", "QUEUED")]
        alice.get(f"{guarded.url}/ui/tasks/{mine}")
        assert text(alice, "#name") == "alice-task"
        assert text(alice, "#owner") == "alice"


class _HostilePage(http.server.BaseHTTPRequestHandler):
    """A web page on another origin that tries to cancel a task with the visitor's credentials."""

    target = ""

    def do_GET(self) -> None:
        body = f"""<!doctype html><title>hostile</title><body><script>
const url = {json.dumps(self.target)};
Promise.allSettled([
  fetch(url, {{method: "POST", mode: "no-cors", credentials: "include", body: "{{}}",
              headers: {{"Content-Type": "text/plain"}}}}),
  fetch(url, {{method: "POST", credentials: "include", body: "{{}}",
              headers: {{"Content-Type": "application/json"}}}}),
]).then(() => {{ document.title = "sent"; }});
const form = document.createElement("form");
form.method = "POST"; form.action = url; form.target = "sink";
const frame = document.createElement("iframe"); frame.name = "sink";
document.body.append(frame, form); form.submit();
</script></body>""".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


def test_a_page_on_another_origin_cannot_cancel_with_the_users_credentials(guarded: Server) -> None:
    mine = create(guarded, shell("true", name="alice-target"), auth=ALICE)
    _HostilePage.target = f"{guarded.tes}/tasks/{mine}:cancel"
    hostile = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HostilePage)
    threading.Thread(target=hostile.serve_forever, daemon=True).start()
    try:
        with chromium() as alice:
            send_basic(alice, *ALICE)
            alice.get(f"http://127.0.0.1:{hostile.server_address[1]}/")
            eventually(lambda: alice.title == "sent", what="the hostile page's requests")
    finally:
        hostile.shutdown()
        hostile.server_close()
    assert state_of(guarded, mine, auth=ALICE) == "QUEUED"


def test_hostile_filters_get_a_400_page_naming_the_field(server: Server) -> None:
    def page(**params: Any) -> httpx.Response:
        return httpx.get(f"{server.url}/ui/", params=params, timeout=10)

    for params, field in (
        ({"name_prefix": "a\x00b"}, "name_prefix"),
        ({"name_prefix": "x" * 5000}, "name_prefix"),
        ({"tag_key": [f"k{i}" for i in range(100)]}, "tag_key"),
        ({"page_token": "forged"}, "page_token"),
        ({"page_size": "-1"}, "page_size"),
        ({"page_size": "many"}, "page_size"),
    ):
        answer = page(**params)
        assert answer.status_code == 400, params
        assert f"<code>{field}</code>" in answer.text, params
        assert answer.headers["content-security-policy"].startswith("default-src 'none'")
    assert page(page_size="999999999").status_code == 200, "a huge page is the largest page"
    for part in ("/ui/parts/task/..%2F..%2Fetc%2Fpasswd", "/ui/tasks/%00"):
        assert httpx.get(server.url + part, timeout=10).status_code in (400, 404)
