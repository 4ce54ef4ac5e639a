"""HTTP(S): inputs by GET, outputs by PUT, streamed both ways (httpx).

Any URL works, query string included, so presigned URLs from S3, GCS or Azure can be used as inputs
and outputs. An endpoint's `options.headers` are sent with every request to URLs under it (an
`Authorization` header, say). Connection errors, timeouts and 5xx answers are retried with backoff
for at most `retry_seconds`; 4xx answers are final. HTTP has no listing, so DIRECTORY inputs over
HTTP are refused with a message that says so.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx

from poiesis.adapters.storage.endpoints import Endpoints
from poiesis.adapters.storage.errors import file_size, os_error, read_stream, remove_quietly, write_stream
from poiesis.ports.storage import Reason, RemoteObject, StorageError

T = TypeVar("T")


class _Retry(Exception):
    pass


def _status_error(url: str, response: httpx.Response, verb: str) -> StorageError:
    code = response.status_code
    detail = f"{verb} answered {code} {response.reason_phrase}"
    if code in (404, 410):
        return StorageError(Reason.NOT_FOUND, url, detail)
    if code in (401, 403):
        return StorageError(Reason.ACCESS_DENIED, url, detail)
    return StorageError(Reason.FAILED, url, detail)


class HttpFiles:
    def __init__(
        self,
        endpoints: Endpoints,
        *,
        retry_seconds: float = 10.0,
        connect_seconds: float = 5.0,
        chunk_bytes: int = 1024 * 1024,
    ) -> None:
        self._endpoints = endpoints
        self._retry_seconds = retry_seconds
        self._chunk = chunk_bytes
        self._connect_seconds = connect_seconds
        self._http: httpx.AsyncClient | None = None

    @property
    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(60.0, connect=self._connect_seconds),
                follow_redirects=True,
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _headers(self, url: str) -> dict[str, str]:
        endpoint = self._endpoints.find(url)
        return dict(endpoint.options.get("headers", {})) if endpoint else {}

    async def _with_retries(self, url: str, attempt: Callable[[], Awaitable[T]]) -> T:
        deadline = time.monotonic() + self._retry_seconds
        delay = 0.1
        while True:
            try:
                return await attempt()
            except (httpx.TransportError, _Retry) as exc:
                if time.monotonic() + delay > deadline:
                    reason = Reason.FAILED if isinstance(exc, _Retry) else Reason.UNREACHABLE
                    detail = str(exc) or type(exc).__name__
                    raise StorageError(reason, url, self._endpoints.scrub(detail)) from exc
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)

    async def download(self, url: str, dest: str) -> int:
        async def attempt() -> int:
            async with self._client.stream("GET", url, headers=self._headers(url)) as response:
                if response.status_code >= 500:
                    raise _Retry(f"GET answered {response.status_code} {response.reason_phrase}")
                if response.status_code >= 400:
                    raise _status_error(url, response, "GET")
                return await write_stream(response.aiter_bytes(self._chunk), dest)

        try:
            return await self._with_retries(url, attempt)
        except OSError as exc:
            remove_quietly(dest)
            raise os_error(url, exc) from exc
        except StorageError:
            remove_quietly(dest)
            raise

    async def upload(self, src: str, url: str) -> int:
        try:
            size = await file_size(src)
        except OSError as exc:
            raise os_error(url, exc) from exc
        headers = self._headers(url) | {"Content-Length": str(size)}

        async def attempt() -> int:
            response = await self._client.put(url, content=read_stream(src, self._chunk), headers=headers)
            if response.status_code >= 500:
                raise _Retry(f"PUT answered {response.status_code} {response.reason_phrase}")
            if response.status_code >= 400:
                raise _status_error(url, response, "PUT")
            return size

        return await self._with_retries(url, attempt)

    async def list(self, url: str) -> list[RemoteObject]:
        raise StorageError(
            Reason.UNSUPPORTED, url, "HTTP has no directory listing; give each file as its own FILE input"
        )
