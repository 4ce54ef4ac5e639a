"""OIDC against a real OpenID Provider: tokens from a real grant, checked by a real server process."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
import tes
from cryptography.hazmat.primitives import serialization

from tests.support.identity import (
    AUDIENCE,
    Client,
    Provider,
    ec_key,
    modules,
    rsa_key,
    running_provider,
)
from tests.support.server import Server, running_server

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.skipif(
        modules() is None, reason="oidc-provider is not installed: run scripts/test (needs npm)"
    ),
]

SHORT = "https://tes.poiesis.test/short-lived"
ELSEWHERE = "https://another-service.test/"
CLIENTS = [
    Client("alice", "alice-secret-0001", ["lab-a"]),
    Client("bob", "bob-secret-00002", ["lab-b"]),
    Client("root", "root-secret-0003", ["tes-admins"]),
]
TASK = {"name": "hello", "executors": [{"image": "alpine", "command": ["true"]}]}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("oidc")


@pytest.fixture(scope="module")
def provider(work: Path) -> Iterator[Provider]:
    resources = {
        AUDIENCE: {"audience": AUDIENCE, "ttl": 600},
        SHORT: {"audience": AUDIENCE, "ttl": 1},
        ELSEWHERE: {"audience": ELSEWHERE, "ttl": 600},
    }
    with running_provider(work, CLIENTS, keys=[rsa_key("first")], resources=resources) as p:
        yield p


@pytest.fixture(scope="module")
def untrusted(work: Path) -> Iterator[Provider]:
    with running_provider(work, CLIENTS) as p:
        yield p


@pytest.fixture(scope="module")
def server(provider: Provider, work: Path) -> Iterator[Server]:
    issuer = {"issuer": provider.issuer, "audience": [AUDIENCE], "admin_values": ["tes-admins"]}
    env = {
        "POIESIS_BACKEND": "none",
        "POIESIS_AUTH": "oidc",
        "POIESIS_OIDC": json.dumps([issuer]),
        "POIESIS_OIDC_LEEWAY_SECONDS": "0",
        "POIESIS_OIDC_JWKS_REFRESH_SECONDS": "0",
    }
    with running_server("api", f"sqlite:///{work / 'poiesis.db'}", work, env) as s:
        yield s


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create(server: Server, token: str) -> str:
    response = httpx.post(f"{server.tes}/tasks", json=TASK, headers=bearer(token))
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def refused(server: Server, token: str) -> str:
    response = httpx.get(f"{server.tes}/tasks", headers=bearer(token))
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith('Bearer realm="poiesis", error="invalid_token"')
    body = response.json()
    assert body["status_code"] == 401
    assert token not in response.text
    return str(body["msg"])


def test_py_tes_with_a_token_creates_gets_lists_and_cancels(server: Server, provider: Provider) -> None:
    client = tes.HTTPClient(server.url, token=provider.token("alice"))
    name = f"py-tes-{uuid.uuid4().hex[:8]}"
    task_id = client.create_task(
        tes.Task(name=name, executors=[tes.Executor(image="alpine", command=["true"])])
    )
    full = client.get_task(task_id, view="FULL")
    assert full.logs[0].metadata == {"owner": "alice"}
    assert [t.id for t in client.list_tasks(view="BASIC").tasks if t.name == name] == [task_id]
    client.cancel_task(task_id)
    assert client.get_task(task_id).state == "CANCELED"
    assert client.get_service_info().name  # public either way


def test_without_a_token_the_api_asks_for_one_and_public_routes_answer(server: Server) -> None:
    response = httpx.get(f"{server.tes}/tasks")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="poiesis"'
    assert response.json() == {"msg": "authentication required", "status_code": 401}
    assert httpx.post(f"{server.tes}/tasks", json=TASK).status_code == 401
    for path in (f"{server.tes}/service-info", f"{server.url}/healthz", f"{server.url}/readyz"):
        assert httpx.get(path).status_code == 200, path


def test_an_expired_token_is_refused(server: Server, provider: Provider) -> None:
    token = provider.token("alice", resource=SHORT)
    time.sleep(2.2)
    assert "expired" in refused(server, token)


def test_a_token_for_another_audience_is_refused(server: Server, provider: Provider) -> None:
    assert "audience" in refused(server, provider.token("alice", resource=ELSEWHERE))


def test_a_token_from_an_untrusted_issuer_is_refused(server: Server, untrusted: Provider) -> None:
    assert "issuer" in refused(server, untrusted.token("alice"))


def _segments(token: str) -> tuple[dict[str, object], dict[str, object], str]:
    head, body, signature = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return (
        json.loads(base64.urlsafe_b64decode(pad(head))),
        json.loads(base64.urlsafe_b64decode(pad(body))),
        signature,
    )


def _encode(part: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


def test_a_tampered_token_is_refused(server: Server, provider: Provider) -> None:
    header, claims, signature = _segments(provider.token("alice"))
    forged = f"{_encode(header)}.{_encode(claims | {'groups': ['tes-admins']})}.{signature}"
    assert "signature" in refused(server, forged)


def test_alg_none_is_refused(server: Server, provider: Provider) -> None:
    _, claims, _ = _segments(provider.token("alice"))
    assert "'none'" in refused(server, f"{_encode({'alg': 'none', 'typ': 'JWT'})}.{_encode(claims)}.")


def test_the_public_key_used_as_an_hmac_secret_is_refused(server: Server, provider: Provider) -> None:
    public = jwt.PyJWK(provider.keys[0]).key.public_key()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    _, claims, _ = _segments(provider.token("alice"))
    # Key confusion: HMAC keyed with the provider's public key, as if it were a shared secret.
    signed = f"{_encode({'alg': 'HS256', 'kid': 'first'})}.{_encode(claims | {'sub': 'root'})}"
    mac = hmac.new(pem, signed.encode(), hashlib.sha256).digest()
    forged = f"{signed}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    assert "HS256" in refused(server, forged)


def test_users_see_only_their_own_tasks_and_admins_see_all(server: Server, provider: Provider) -> None:
    alice, bob, root = (provider.token(c) for c in ("alice", "bob", "root"))
    mine = create(server, alice)
    theirs = create(server, bob)
    assert httpx.get(f"{server.tes}/tasks/{theirs}", headers=bearer(alice)).status_code == 404
    unknown = httpx.get(f"{server.tes}/tasks/01jzzzzzzzzzzzzzzzzzzzzzzz", headers=bearer(alice))
    hidden = httpx.get(f"{server.tes}/tasks/{theirs}", headers=bearer(alice))
    assert hidden.status_code == unknown.status_code == 404
    assert hidden.json()["msg"].replace(theirs, "X") == unknown.json()["msg"].replace(
        "01jzzzzzzzzzzzzzzzzzzzzzzz", "X"
    )
    assert httpx.post(f"{server.tes}/tasks/{theirs}:cancel", headers=bearer(alice)).status_code == 404
    assert httpx.get(f"{server.tes}/tasks/{theirs}", headers=bearer(bob)).json()["state"] == "QUEUED"
    listed = {t["id"] for t in httpx.get(f"{server.tes}/tasks", headers=bearer(alice)).json()["tasks"]}
    assert mine in listed
    assert theirs not in listed
    assert httpx.get(f"{server.tes}/tasks", params={"owner": "bob"}, headers=bearer(alice)).status_code == 403
    everyone = {t["id"] for t in httpx.get(f"{server.tes}/tasks", headers=bearer(root)).json()["tasks"]}
    assert {mine, theirs} <= everyone
    only_bob = httpx.get(f"{server.tes}/tasks", params={"owner": "bob", "view": "FULL"}, headers=bearer(root))
    assert {t["logs"][0]["metadata"]["owner"] for t in only_bob.json()["tasks"]} == {"bob"}
    assert httpx.post(f"{server.tes}/tasks/{theirs}:cancel", headers=bearer(root)).status_code == 200
    log = server.log.read_text()
    audit = [json.loads(line) for line in log.splitlines() if '"poiesis.audit"' in line]
    assert {"event": "cancel", "task_id": theirs, "principal": "root", "client": "127.0.0.1"}.items() <= next(
        a for a in audit if a["event"] == "cancel" and a["task_id"] == theirs
    ).items()
    assert alice not in log
    assert bob not in log
    assert root not in log


def test_a_rotated_key_is_picked_up_and_the_removed_one_refused(server: Server, provider: Provider) -> None:
    old = provider.token("alice")
    create(server, old)
    provider.restart([ec_key("second")])
    new = provider.token("alice")
    assert jwt.get_unverified_header(new)["kid"] == "second"
    create(server, new)
    assert "does not publish" in refused(server, old)
