"""Basic authentication against a users file of argon2id hashes.

The file has one `name:hash` line per user (`#` starts a comment) and is written by `poiesis users
add|remove`. It is read again whenever it changes on disk, so adding or removing a user needs no
restart, and a removed user or a changed password takes effect on the next request.

Verifying a password costs tens of milliseconds of CPU and 64 MiB by design. So that a flood of
wrong passwords cannot take the server's cores, verifications run one at a time on a worker thread
(the event loop keeps serving), with a bounded queue behind them, and a correct password is
remembered for `cache_seconds` under a keyed digest (never the password itself). An unknown user
costs the same verification as a known one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from poiesis.domain.errors import InvalidRequest, Unauthenticated
from poiesis.domain.principal import Principal
from poiesis.ports.auth import AuthUnavailable

log = logging.getLogger(__name__)

_CACHE_ENTRIES = 4096


def check_name(name: str) -> str:
    if not name or len(name) > 256 or ":" in name or not name.isprintable() or name != name.strip():
        raise InvalidRequest("name", "must be 1-256 printable characters, with no ':' and no edge spaces")
    return name


def read_users(path: Path) -> dict[str, str]:
    """The users file as {name: hash}; a missing file has no users."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    users: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, digest = line.partition(":")
        if not sep or not digest.startswith("$argon2"):
            log.warning("%s:%d is not a name:argon2-hash line; ignored", path, number)
            continue
        users[name] = digest
    return users


def write_users(path: Path, users: dict[str, str]) -> None:
    """Replace the users file atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("# poiesis users: name:argon2id hash; edit with `poiesis users add|remove`\n")
            out.writelines(f"{name}:{digest}\n" for name, digest in sorted(users.items()))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def hash_password(password: str) -> str:
    return PasswordHasher().hash(password)


class BasicAuthenticator:
    def __init__(
        self,
        path: Path,
        *,
        admins: frozenset[str] = frozenset(),
        qualify: bool = False,
        cache_seconds: float = 60.0,
        max_waiting: int = 32,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._admins = admins
        self._qualify = qualify
        self._cache_seconds = cache_seconds
        self._max_waiting = max_waiting
        self._monotonic = monotonic
        self._hasher = PasswordHasher()
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))
        self._key = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, float] = OrderedDict()
        self._users: dict[str, str] = {}
        self._seen: tuple[int, int, int] | None = None
        self._slot = asyncio.Semaphore(1)
        self._waiting = 0
        self._reload()

    @property
    def scheme(self) -> str:
        return "Basic"

    def challenge(self, error: str | None = None) -> str:
        return 'Basic realm="poiesis", charset="UTF-8"'

    async def authenticate(self, credentials: str) -> Principal:
        name, password = _decode(credentials)
        self._reload()
        digest = self._users.get(name)
        key = hmac.new(self._key, f"{name}\0{password}".encode(), hashlib.sha256).digest()
        now = self._monotonic()
        expires = self._verified.get(key)
        if digest is not None and expires is not None and expires > now:
            self._verified.move_to_end(key)
            return self._principal(name)
        if not await self._verify(digest or self._dummy, password) or digest is None:
            raise Unauthenticated("wrong user name or password")
        self._verified[key] = now + self._cache_seconds
        while len(self._verified) > _CACHE_ENTRIES:
            self._verified.popitem(last=False)
        return self._principal(name)

    def _principal(self, name: str) -> Principal:
        return Principal(name=f"basic#{name}" if self._qualify else name, admin=name in self._admins)

    async def _verify(self, digest: str, password: str) -> bool:
        if self._waiting >= self._max_waiting:
            raise AuthUnavailable("too many password checks at once; retry shortly")
        self._waiting += 1
        try:
            async with self._slot:
                return await asyncio.to_thread(self._check, digest, password)
        finally:
            self._waiting -= 1

    def _check(self, digest: str, password: str) -> bool:
        try:
            return self._hasher.verify(digest, password)
        except (VerificationError, InvalidHashError):
            return False

    def _reload(self) -> None:
        try:
            st = self._path.stat()
            seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            seen = (0, 0, 0)
        if seen == self._seen:
            return
        self._users = read_users(self._path)
        self._seen = seen
        self._verified.clear()  # a changed password or a removed user counts from now on
        log.info("basic auth: %d user(s) from %s", len(self._users), self._path)


def _decode(credentials: str) -> tuple[str, str]:
    try:
        text = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Unauthenticated("malformed Basic credentials") from None
    name, sep, password = text.partition(":")
    if not sep or not name:
        raise Unauthenticated("malformed Basic credentials")
    return name, password
