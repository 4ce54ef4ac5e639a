"""Basic authentication against a users file: hashes, reloads, the verification budget."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from poiesis.adapters.auth.basic import BasicAuthenticator, read_users, write_users
from poiesis.domain.errors import Unauthenticated
from poiesis.ports.auth import AuthUnavailable

# Cheap parameters keep the tests fast; verification follows the parameters stored in each hash.
CHEAP = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)


def creds(name: str, password: str) -> str:
    return base64.b64encode(f"{name}:{password}".encode()).decode()


@pytest.fixture
def users(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    write_users(path, {"alice": CHEAP.hash("alice-password"), "root": CHEAP.hash("root-password")})
    return path


async def test_right_password_wrong_password_and_unknown_user(users: Path) -> None:
    auth = BasicAuthenticator(users, admins=frozenset({"root"}))
    alice = await auth.authenticate(creds("alice", "alice-password"))
    assert (alice.name, alice.admin) == ("alice", False)
    assert (await auth.authenticate(creds("root", "root-password"))).admin
    for bad in (creds("alice", "wrong"), creds("mallory", "alice-password"), creds("alice", "")):
        with pytest.raises(Unauthenticated, match="wrong user name or password"):
            await auth.authenticate(bad)


@pytest.mark.parametrize(
    "credentials",
    [
        pytest.param("not base64!", id="not base64"),
        pytest.param(base64.b64encode(b"no-colon").decode(), id="no colon"),
        pytest.param(base64.b64encode(b":password").decode(), id="no name"),
        pytest.param(base64.b64encode(b"\xff\xfe:x").decode(), id="not utf-8"),
    ],
)
async def test_malformed_credentials_are_refused(users: Path, credentials: str) -> None:
    with pytest.raises(Unauthenticated, match="malformed"):
        await BasicAuthenticator(users).authenticate(credentials)


async def test_a_changed_users_file_counts_from_the_next_request(users: Path) -> None:
    auth = BasicAuthenticator(users)
    assert (await auth.authenticate(creds("alice", "alice-password"))).name == "alice"  # now cached
    write_users(
        users, read_users(users) | {"alice": CHEAP.hash("new-password"), "bob": CHEAP.hash("bob-pass")}
    )
    with pytest.raises(Unauthenticated):
        await auth.authenticate(creds("alice", "alice-password"))
    assert (await auth.authenticate(creds("alice", "new-password"))).name == "alice"
    assert (await auth.authenticate(creds("bob", "bob-pass"))).name == "bob"
    write_users(users, {})
    with pytest.raises(Unauthenticated):
        await auth.authenticate(creds("bob", "bob-pass"))


async def test_a_remembered_password_expires(users: Path) -> None:
    now = [0.0]
    auth = BasicAuthenticator(users, cache_seconds=10, monotonic=lambda: now[0])
    checks = 0
    check = auth._check

    def counting(digest: str, password: str) -> bool:
        nonlocal checks
        checks += 1
        return check(digest, password)

    auth._check = counting  # type: ignore[method-assign]
    for _ in range(3):
        await auth.authenticate(creds("alice", "alice-password"))
    assert checks == 1
    now[0] = 11.0
    await auth.authenticate(creds("alice", "alice-password"))
    assert checks == 2


async def test_a_flood_of_bad_passwords_is_verified_one_at_a_time_and_bounded(users: Path) -> None:
    auth = BasicAuthenticator(users, max_waiting=4)
    running = peak = 0
    check = auth._check

    def slow(digest: str, password: str) -> bool:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            return check(digest, password)
        finally:
            running -= 1

    auth._check = slow  # type: ignore[method-assign]
    results = await asyncio.gather(
        *(auth.authenticate(creds("alice", f"guess-{i}")) for i in range(12)), return_exceptions=True
    )
    assert peak == 1
    assert sum(isinstance(r, AuthUnavailable) for r in results) == 8
    assert sum(isinstance(r, Unauthenticated) for r in results) == 4
    assert (await auth.authenticate(creds("alice", "alice-password"))).name == "alice"


def test_the_users_file_is_private_and_ignores_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "users"
    write_users(path, {"alice": CHEAP.hash("x" * 8)})
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_text(path.read_text() + "garbage line\nbob:plaintext\n")
    assert set(read_users(path)) == {"alice"}
    assert read_users(tmp_path / "missing") == {}


async def test_qualified_names_when_several_methods_are_on(users: Path) -> None:
    auth = BasicAuthenticator(users, qualify=True)
    assert (await auth.authenticate(creds("alice", "alice-password"))).name == "basic#alice"
