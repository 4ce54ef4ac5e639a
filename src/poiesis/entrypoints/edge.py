"""The API's front door against browsers: what a web page or a rebinding attack can send.

A page in the user's browser can make it POST to any address, including 127.0.0.1, without the
user's knowledge; CORS only stops it reading the answer, not the request. So, before any handler:

- a state-changing request (POST) must be `Content-Type: application/json` (415 otherwise): a page
  can only send that type after a CORS preflight, which this server refuses unless configured. A
  cancel with no body and no content type is let through for command-line clients, but only when no
  browser sent it (no `Origin`);
- a state-changing request that a browser sent from another origin (its `Origin` is neither this
  server nor a configured CORS origin) is refused (403);
- while the server listens on a loopback address, a `Host` other than a loopback name (or one of
  `allowed_hosts`) is refused (400): a DNS-rebinding page reaches 127.0.0.1 under its own name.

Each refusal at the door (those above, and 401 and 403 from authentication) is one log line with
the client's address, the method and path (never the query or a header's value beyond the Host and
Origin named in the reason), at most one per client and status every `RefusalLog.every` seconds;
the next line counts the ones it left out.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from urllib.parse import urlsplit

from litestar.datastructures import Headers
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from poiesis.domain.errors import Forbidden, InvalidRequest, UnsupportedMediaType

_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
log = logging.getLogger("poiesis.edge")


class RefusalLog:
    """One line per refused request, rate-limited per (client address, status), in bounded memory."""

    def __init__(
        self, every: float = 10.0, clients: int = 4096, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.every = every
        self._clients = clients
        self._clock = clock
        self._seen: OrderedDict[tuple[str, int], tuple[float, int]] = OrderedDict()

    def refused(self, status: int, client: str, method: str, path: str, reason: str) -> bool:
        """Log the refusal unless one like it was logged within `every` seconds; True if logged."""
        now, key = self._clock(), (client, status)
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.every:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        skipped = last[1] if last is not None else 0
        self._seen[key] = (now, 0)
        self._seen.move_to_end(key)
        while len(self._seen) > self._clients:
            self._seen.popitem(last=False)
        more = f" (and {skipped} more since the last line)" if skipped else ""
        log.warning("refused %d %s %s from %s: %s%s", status, method, path[:200], client, reason[:200], more)
        return True


refusals = RefusalLog()


def host_name(host: str) -> str:
    """The name in a Host header, without its port (IPv6 literals keep no brackets)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class EdgeGuard(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    def __init__(self, *, hosts: frozenset[str] | None, origins: frozenset[str]) -> None:
        self._hosts = hosts
        self._origins = origins

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        self.check(scope, Headers.from_scope(scope))
        await next_app(scope, receive, send)

    def check(self, scope: Scope, headers: Headers) -> None:
        """Raise the refusal of a request the front door does not let through."""
        host = headers.get("host", "")
        if self._hosts is not None and host_name(host) not in self._hosts:
            raise InvalidRequest("Host", f"{host!r} is not a name this server answers to")
        if scope.get("method") in _UNSAFE:
            origin = headers.get("origin")
            if (
                origin is not None
                and origin not in self._origins
                and urlsplit(origin).netloc.lower() != host.lower()
            ):
                raise Forbidden(f"a cross-origin request from {origin[:200]!r} is refused")
            media = (headers.get("content-type") or "").split(";", 1)[0].strip().lower()
            if media != "application/json" and not _bare_cancel(scope, headers, origin):
                raise UnsupportedMediaType("Content-Type must be application/json")


def _bare_cancel(scope: Scope, headers: Headers, origin: str | None) -> bool:
    return (
        origin is None
        and "content-type" not in headers
        and headers.get("content-length", "0") == "0"
        and "transfer-encoding" not in headers
        and str(scope.get("path", "")).endswith(":cancel")
    )
