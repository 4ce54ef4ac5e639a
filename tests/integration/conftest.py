"""Real servers shared by the integration suites: S3 (moto), FTP, HTTP, Azure Blob (Azurite)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import storage


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[storage.S3]:
    with storage.moto_s3(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture(scope="session")
def ftp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[storage.Ftp]:
    with storage.ftp_server(tmp_path_factory.mktemp("ftp")) as server:
        yield server


@pytest.fixture(scope="session")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[storage.Http]:
    with storage.http_server(tmp_path_factory.mktemp("www")) as server:
        yield server


@pytest.fixture(scope="session")
def azure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[storage.Azure]:
    missing = storage.azurite_missing()
    if missing:
        pytest.skip(missing)
    with storage.azurite(tmp_path_factory.mktemp("azurite")) as server:
        yield server
