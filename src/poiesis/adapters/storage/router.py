"""One ObjectStorage for every scheme: picks the adapter by the URL's scheme."""

from __future__ import annotations

from poiesis.adapters.storage.endpoints import Endpoint, Endpoints
from poiesis.adapters.storage.ftp import FtpFiles
from poiesis.adapters.storage.http import HttpFiles
from poiesis.adapters.storage.local import LocalFiles
from poiesis.adapters.storage.objectstores import ObjectStores, is_azure_https
from poiesis.domain.staging import scheme_of
from poiesis.ports.storage import ObjectStorage, Reason, RemoteObject, StorageError


class StorageRouter:
    def __init__(
        self,
        *,
        endpoints: list[Endpoint] | None = None,
        file_roots: list[str] | None = None,
        retry_seconds: float = 10.0,
        part_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        table = Endpoints(endpoints or [])
        self._objects = ObjectStores(table, retry_seconds=retry_seconds, part_bytes=part_bytes)
        self._http = HttpFiles(table, retry_seconds=retry_seconds)
        self._ftp = FtpFiles(table, retry_seconds=retry_seconds)
        self._local = LocalFiles(file_roots or [])

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> StorageRouter:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    def _pick(self, url: str) -> ObjectStorage:
        scheme = scheme_of(url)
        if scheme in ("s3", "gs", "az", "abfs", "abfss"):
            return self._objects
        if scheme in ("http", "https"):
            return self._objects if is_azure_https(url) else self._http
        if scheme == "ftp":
            return self._ftp
        if scheme == "file":
            return self._local
        raise StorageError(Reason.UNSUPPORTED, url, f"no filer for the scheme {scheme!r}")

    async def download(self, url: str, dest: str) -> int:
        return await self._pick(url).download(url, dest)

    async def upload(self, src: str, url: str) -> int:
        return await self._pick(url).upload(src, url)

    async def list(self, url: str) -> list[RemoteObject]:
        return await self._pick(url).list(url)
