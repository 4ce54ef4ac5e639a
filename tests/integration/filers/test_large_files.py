"""A 2 GB file through the filers both ways, streamed: to S3 in parts and back, and over HTTP."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from poiesis.adapters.storage.endpoints import Endpoint
from poiesis.adapters.storage.router import StorageRouter
from poiesis.adapters.storage.workspace import LocalWorkspace
from poiesis.domain.submission import NewInput, NewOutput
from poiesis.services.staging import Stager
from tests.builders import make_task
from tests.conftest import FakeClock
from tests.support import storage

SIZE = 2 * 1000**3  # 2 GB
BLOCK = 1024 * 1024


def write_big(path: Path) -> str:
    """A 2 GB file of distinct blocks; returns its SHA-256."""
    digest = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    seed = hashlib.sha256(b"poiesis").digest() * (BLOCK // 32)
    with path.open("wb") as f:
        written = 0
        n = 0
        while written < SIZE:
            block = (n.to_bytes(8, "big") + seed)[: min(BLOCK, SIZE - written)]
            f.write(block)
            digest.update(block)
            written += len(block)
            n += 1
    return digest.hexdigest()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 * BLOCK):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def big_workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalWorkspace, str]:
    root = tmp_path_factory.mktemp("big")
    workspace = LocalWorkspace(str(root))
    return workspace, write_big(Path(workspace.local("/data/out/big.bin")))


async def test_a_2gb_file_goes_to_s3_in_parts_and_comes_back_intact(
    s3_server: storage.S3, big_workspace: tuple[LocalWorkspace, str], tmp_path: Path
) -> None:
    workspace, digest = big_workspace
    s3_server.client().create_bucket(Bucket="big-files")
    url = "s3://big-files/run/big.bin"
    router = StorageRouter(
        endpoints=[Endpoint(url="s3://", options=s3_server.options())], part_bytes=64 * BLOCK
    )
    async with router:
        out = make_task(FakeClock(), outputs=[NewOutput(path="/data/out/big.bin", url=url)])
        logs = await Stager(router).stage_out(out, workspace)
        assert logs[0].size_bytes == str(SIZE)
        head = s3_server.client().head_object(Bucket="big-files", Key="run/big.bin")
        assert head["ContentLength"] == SIZE
        assert "-" in head["ETag"]  # a multipart upload's ETag

        back = LocalWorkspace(str(tmp_path))
        inp = make_task(FakeClock(), inputs=[NewInput(path="/data/in/big.bin", url=url)])
        assert await Stager(router).stage_in(inp, back) == SIZE
    assert sha256(Path(back.root + "/data/in/big.bin")) == digest
    s3_server.client().delete_object(Bucket="big-files", Key="run/big.bin")


async def test_a_2gb_file_goes_out_by_http_put_and_in_by_get(
    http: storage.Http, big_workspace: tuple[LocalWorkspace, str], tmp_path: Path
) -> None:
    workspace, digest = big_workspace
    url = f"{http.base}/big/big.bin"
    async with StorageRouter() as router:
        out = make_task(FakeClock(), outputs=[NewOutput(path="/data/out/big.bin", url=url)])
        logs = await Stager(router).stage_out(out, workspace)
        assert logs[0].size_bytes == str(SIZE)
        assert (http.root / "big" / "big.bin").stat().st_size == SIZE
        back = LocalWorkspace(str(tmp_path))
        inp = make_task(FakeClock(), inputs=[NewInput(path="/data/in/big.bin", url=url)])
        await Stager(router).stage_in(inp, back)
    assert sha256(Path(back.root + "/data/in/big.bin")) == digest
    (http.root / "big" / "big.bin").unlink()
