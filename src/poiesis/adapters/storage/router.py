"""One ObjectStorage for every scheme: picks the adapter by the URL's scheme.

Adapters are built (and their libraries imported) on first use, so a filer that only touches S3
never pays for the HTTP or FTP clients: the start-up of a `tif`/`tof` container is on every task's
critical path.
"""

from __future__ import annotations

from typing import Any

from poiesis.adapters.storage.endpoints import Endpoint, Endpoints
from poiesis.domain.staging import scheme_of
from poiesis.ports.storage import ObjectStorage, Reason, RemoteObject, StorageError

_OBJECT_STORES = ("s3", "gs", "az", "abfs", "abfss")


class StorageRouter:
    def __init__(
        self,
        *,
        endpoints: list[Endpoint] | None = None,
        file_roots: list[str] | None = None,
        retry_seconds: float = 10.0,
        part_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self._table = Endpoints(endpoints or [])
        self._file_roots = file_roots or []
        self._retry_seconds = retry_seconds
        self._part_bytes = part_bytes
        self._adapters: dict[str, Any] = {}

    async def aclose(self) -> None:
        http = self._adapters.pop("http", None)
        if http is not None:
            await http.aclose()

    async def __aenter__(self) -> StorageRouter:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    def _build(self, kind: str) -> ObjectStorage:
        if kind == "objects":
            from poiesis.adapters.storage.objectstores import ObjectStores

            return ObjectStores(self._table, retry_seconds=self._retry_seconds, part_bytes=self._part_bytes)
        if kind == "http":
            from poiesis.adapters.storage.http import HttpFiles

            return HttpFiles(self._table, retry_seconds=self._retry_seconds)
        if kind == "ftp":
            from poiesis.adapters.storage.ftp import FtpFiles

            return FtpFiles(self._table, retry_seconds=self._retry_seconds)
        from poiesis.adapters.storage.local import LocalFiles

        return LocalFiles(self._file_roots)

    def _pick(self, url: str) -> ObjectStorage:
        from poiesis.adapters.storage.objectstores import is_azure_https

        scheme = scheme_of(url)
        if scheme in _OBJECT_STORES or (scheme == "https" and is_azure_https(url)):
            kind = "objects"
        elif scheme in ("http", "https"):
            kind = "http"
        elif scheme in ("ftp", "file"):
            kind = scheme
        else:
            raise StorageError(Reason.UNSUPPORTED, url, f"no filer for the scheme {scheme!r}")
        adapter = self._adapters.get(kind)
        if adapter is None:
            adapter = self._adapters[kind] = self._build(kind)
        return adapter

    async def download(self, url: str, dest: str) -> int:
        return await self._pick(url).download(url, dest)

    async def upload(self, src: str, url: str) -> int:
        return await self._pick(url).upload(src, url)

    async def list(self, url: str) -> list[RemoteObject]:
        return await self._pick(url).list(url)
