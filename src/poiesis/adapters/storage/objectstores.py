"""S3 (and S3-compatible), Google Cloud Storage and Azure Blob through obstore.

URLs: `s3://bucket/key`, `gs://bucket/key`, `az://container/blob`, `abfs[s]://container@account...`,
and `https://<account>.blob.core.windows.net/<container>/<blob>`. One obstore store is built per
bucket or container (with its endpoint's options) and reused. Downloads stream in chunks into the
file; uploads go from the file in parts of `part_bytes` (a multipart upload above that size).
Retries with backoff are obstore's own, capped at `retry_seconds` in all. A host that does not
answer fails after `connect_seconds`; one request may take up to `request_seconds` (obstore's own
default, 30 s, is too short for S3 to assemble a multipart upload of many gigabytes). An endpoint's
`client` options override both (`connect_timeout`, `timeout`).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import obstore
from obstore.exceptions import (
    BaseError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from obstore.store import from_url

from poiesis.adapters.storage.endpoints import Endpoints
from poiesis.adapters.storage.errors import file_size, os_error, remove_quietly, write_stream
from poiesis.ports.storage import Reason, RemoteObject, StorageError

AZURE_BLOB_HOST = ".blob.core.windows.net"


def split(url: str) -> tuple[str, str]:
    """(the store's root URL, the object's path within it)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    path = unquote(parts.path).lstrip("/")
    if scheme in ("http", "https") and parts.hostname and parts.hostname.endswith(AZURE_BLOB_HOST):
        container, _, blob = path.partition("/")
        return f"{scheme}://{parts.netloc}/{container}", blob
    return f"{scheme}://{parts.netloc}", path


def is_azure_https(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host.endswith(AZURE_BLOB_HOST)


def _classify(url: str, exc: Exception) -> Reason:
    if isinstance(exc, FileNotFoundError | NotFoundError):
        return Reason.NOT_FOUND
    if isinstance(exc, PermissionDeniedError | UnauthenticatedError | PermissionError):
        return Reason.ACCESS_DENIED
    text = str(exc)
    if "403 Forbidden" in text or "401 Unauthorized" in text or "AccessDenied" in text:
        return Reason.ACCESS_DENIED
    if "error sending request" in text or "Connection refused" in text or "dns error" in text:
        return Reason.UNREACHABLE
    if "timed out" in text.lower():
        return Reason.UNREACHABLE
    return Reason.FAILED


def _summary(exc: Exception) -> str:
    """The storage library's message without the raw response it may quote (an S3 XML body)."""
    text = str(exc).split("\n", 1)[0]
    for marker in ("<?xml", "<Error", "response body"):
        cut = text.find(marker)
        if cut >= 0:
            text = text[:cut]
    return text.rstrip(" :,")[:300]


def _plain_http(options: dict[str, Any]) -> bool:
    """Whether the store's endpoint is plain http (a local MinIO, moto, Azurite): from its options,
    or from the environment variables obstore reads itself."""
    endpoint = str(
        options.get("endpoint") or os.environ.get("AWS_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL") or ""
    )
    return endpoint.startswith("http://") or os.environ.get("AWS_ALLOW_HTTP", "").lower() == "true"


class ObjectStores:
    def __init__(
        self,
        endpoints: Endpoints,
        *,
        retry_seconds: float = 10.0,
        connect_seconds: float = 5.0,
        request_seconds: float = 300.0,
        part_bytes: int = 16 * 1024 * 1024,
        part_concurrency: int = 4,
    ) -> None:
        self._endpoints = endpoints
        self._retry = {
            "max_retries": 10,
            "retry_timeout": timedelta(seconds=retry_seconds),
            "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=2)},
        }
        self._connect = f"{int(connect_seconds * 1000)}ms"
        self._request = f"{int(request_seconds * 1000)}ms"
        self._part_bytes = part_bytes
        self._part_concurrency = part_concurrency
        self._stores: dict[str, Any] = {}

    def _store(self, url: str) -> tuple[Any, str]:
        root, path = split(url)
        store = self._stores.get(root)
        if store is None:
            endpoint = self._endpoints.find(url)
            options = dict(endpoint.options) if endpoint else {}
            client: dict[str, Any] = {"connect_timeout": self._connect, "timeout": self._request}
            client |= endpoint.client if endpoint else {}
            if _plain_http(options):
                client.setdefault("allow_http", True)
            try:
                store = from_url(  # type: ignore[call-overload]
                    root, config=options or None, client_options=client, retry_config=self._retry
                )
            except (BaseError, ValueError, TypeError) as exc:
                raise StorageError(Reason.FAILED, url, self._endpoints.scrub(str(exc))) from exc
            self._stores[root] = store
        return store, path

    def _error(self, url: str, exc: Exception) -> StorageError:
        if isinstance(exc, StorageError):
            return exc
        local = isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError | PermissionError)
        if local and isinstance(exc, OSError) and exc.errno:
            return os_error(url, exc)
        return StorageError(_classify(url, exc), url, self._endpoints.scrub(_summary(exc)))

    async def download(self, url: str, dest: str) -> int:
        store, path = self._store(url)
        try:
            result = await obstore.get_async(store, path)
            return await write_stream(result.stream(min_chunk_size=self._part_bytes // 2), dest)
        except (BaseError, OSError) as exc:
            remove_quietly(dest)
            raise self._error(url, exc) from exc

    async def upload(self, src: str, url: str) -> int:
        store, path = self._store(url)
        try:
            size = await file_size(src)
            await obstore.put_async(
                store,
                path,
                Path(src),
                chunk_size=self._part_bytes,
                max_concurrency=self._part_concurrency,
            )
        except (BaseError, OSError) as exc:
            raise self._error(url, exc) from exc
        return size

    async def list(self, url: str) -> list[RemoteObject]:
        store, path = self._store(url)
        prefix = path.rstrip("/")
        found: list[RemoteObject] = []
        try:
            async for batch in obstore.list(store, prefix or None, chunk_size=1000):
                for meta in batch:
                    rel = meta["path"][len(prefix) :].lstrip("/") if prefix else meta["path"]
                    if rel and not rel.endswith("/"):
                        found.append(RemoteObject(rel, meta["size"]))
        except (BaseError, OSError) as exc:
            raise self._error(url, exc) from exc
        return sorted(found, key=lambda o: o.relative)
