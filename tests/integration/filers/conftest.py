"""One contract suite for every storage scheme, each against a real server on 127.0.0.1.

A `Remote` is one scheme's server seen from the test: how to write and read objects there directly
(without the filer), how to name them by URL, and the endpoint settings the filer needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from poiesis.adapters.storage.endpoints import Endpoint
from poiesis.adapters.storage.router import StorageRouter
from tests.support import storage


@dataclass
class Remote:
    scheme: str
    url: Callable[[str], str]
    put: Callable[[str, bytes], None]
    get: Callable[[str], bytes]
    keys: Callable[[str], list[str]]
    endpoints: list[Endpoint] = field(default_factory=list)
    file_roots: list[str] = field(default_factory=list)
    lists: bool = True

    def router(self, **kwargs: object) -> StorageRouter:
        return StorageRouter(
            endpoints=self.endpoints,
            file_roots=self.file_roots,
            retry_seconds=2.0,
            **kwargs,  # type: ignore[arg-type]
        )


def _s3_remote(server: storage.S3, bucket: str) -> Remote:
    client = server.client()
    client.create_bucket(Bucket=bucket)

    def keys(prefix: str) -> list[str]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    return Remote(
        scheme="s3",
        url=lambda key: f"s3://{bucket}/{key}",
        put=lambda key, data: client.put_object(Bucket=bucket, Key=key, Body=data),
        get=lambda key: client.get_object(Bucket=bucket, Key=key)["Body"].read(),
        keys=keys,
        endpoints=[Endpoint(url="s3://", options=server.options())],
    )


def _tree_remote(scheme: str, root: Path, url: Callable[[str], str], **kwargs: object) -> Remote:
    def put(key: str, data: bytes) -> None:
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)

    def keys(prefix: str) -> list[str]:
        top = root / prefix
        if top.is_file():
            return [prefix]
        return sorted(str(p.relative_to(root)) for p in top.rglob("*") if p.is_file()) if top.exists() else []

    return Remote(scheme, url, put, lambda key: (root / key).read_bytes(), keys, **kwargs)  # type: ignore[arg-type]


def _azure_remote(server: storage.Azure, container: str) -> Remote:
    from azure.storage.blob import ContainerClient

    server.create_container(container)
    connection = (
        f"DefaultEndpointsProtocol=http;AccountName={storage.AZURITE_ACCOUNT};"
        f"AccountKey={storage.AZURITE_KEY};BlobEndpoint={server.endpoint};"
    )
    client = ContainerClient.from_connection_string(connection, container)
    return Remote(
        scheme="az",
        url=lambda key: f"az://{container}/{key}",
        put=lambda key, data: client.upload_blob(key, data, overwrite=True) and None,
        get=lambda key: client.download_blob(key).readall(),
        keys=lambda prefix: sorted(b.name for b in client.list_blobs(name_starts_with=prefix)),
        endpoints=[Endpoint(url=f"az://{container}", options=server.options())],
    )


_buckets = iter(range(10_000))


@pytest.fixture(params=["s3", "ftp", "http", "az", "file"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Remote:
    """A fresh bucket, directory or container on each scheme's server."""
    n = next(_buckets)
    scheme = request.param
    if scheme == "s3":
        return _s3_remote(request.getfixturevalue("s3_server"), f"bucket-{n}")
    if scheme == "az":
        return _azure_remote(request.getfixturevalue("azure"), f"container-{n}")
    if scheme == "ftp":
        server: storage.Ftp = request.getfixturevalue("ftp")
        root = server.root / f"area-{n}"
        root.mkdir()
        return _tree_remote("ftp", root, lambda key: server.url(f"area-{n}/{key}"))
    if scheme == "http":
        web: storage.Http = request.getfixturevalue("http")
        root = web.root / f"site-{n}"
        root.mkdir()
        return _tree_remote("http", root, lambda key: f"{web.base}/site-{n}/{key}", lists=False)
    root = tmp_path / "shared"
    root.mkdir()
    return _tree_remote("file", root, lambda key: f"file://{root}/{key}", file_roots=[str(root)])
