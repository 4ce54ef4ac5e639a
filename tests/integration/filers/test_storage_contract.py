"""The filers against every scheme: what each input and output does, and how each failure reads."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from poiesis.adapters.storage.workspace import LocalWorkspace
from poiesis.domain.submission import NewInput, NewOutput
from poiesis.domain.tes import FileType, OutputFileLog
from poiesis.services.staging import Stager, StagingFailed
from tests.builders import make_task
from tests.conftest import FakeClock
from tests.integration.filers.conftest import Remote


def task(**fields: object):  # type: ignore[no-untyped-def]
    return make_task(FakeClock(), **fields)


@pytest.fixture
async def stager(remote: Remote) -> AsyncIterator[Stager]:
    async with remote.router() as router:
        yield Stager(router, parallel=8)


@pytest.fixture
def workspace(tmp_path: Path) -> LocalWorkspace:
    (tmp_path / "ws").mkdir()
    return LocalWorkspace(str(tmp_path / "ws"))


def ws_file(workspace: LocalWorkspace, path: str) -> bytes:
    return Path(workspace.root + path).read_bytes()


def write(workspace: LocalWorkspace, path: str, data: bytes) -> None:
    target = Path(workspace.local(path))
    target.write_bytes(data)


async def test_a_file_input_arrives_at_its_path(
    remote: Remote, workspace: LocalWorkspace, stager: Stager
) -> None:
    remote.put("in/reads 1.fq", b"@r1\nACGT\n")
    t = task(inputs=[NewInput(path="/data/in/reads.fq", url=remote.url("in/reads 1.fq"))])
    staged = await stager.stage_in(t, workspace)
    assert ws_file(workspace, "/data/in/reads.fq") == b"@r1\nACGT\n"
    assert staged == 9


async def test_a_directory_input_keeps_its_nested_structure(
    remote: Remote, workspace: LocalWorkspace, stager: Stager
) -> None:
    files = {"ref/a.txt": b"a", "ref/sub/b.txt": b"bb", "ref/sub/deeper/c.txt": b"ccc", "refx/no.txt": b"x"}
    for key, data in files.items():
        remote.put(key, data)
    t = task(inputs=[NewInput(path="/data/ref", url=remote.url("ref"), type=FileType.DIRECTORY)])
    if not remote.lists:
        with pytest.raises(StagingFailed, match=r"input 0 \(/data/ref\) from .*: not supported"):
            await stager.stage_in(t, workspace)
        return
    await stager.stage_in(t, workspace)
    assert ws_file(workspace, "/data/ref/a.txt") == b"a"
    assert ws_file(workspace, "/data/ref/sub/b.txt") == b"bb"
    assert ws_file(workspace, "/data/ref/sub/deeper/c.txt") == b"ccc"
    assert not Path(workspace.root + "/data/ref/no.txt").exists()
    assert not Path(workspace.root + "/data/refx").exists()


async def test_a_directory_output_uploads_every_file_with_its_structure_and_size(
    remote: Remote, workspace: LocalWorkspace, stager: Stager
) -> None:
    write(workspace, "/data/out/top.txt", b"1")
    write(workspace, "/data/out/x/y/z.txt", b"22")
    write(workspace, "/data/out/x/w.txt", b"333")
    t = task(outputs=[NewOutput(path="/data/out", url=remote.url("results/"), type=FileType.DIRECTORY)])
    logs = await stager.stage_out(t, workspace)
    assert remote.keys("results") == ["results/top.txt", "results/x/w.txt", "results/x/y/z.txt"]
    assert remote.get("results/x/y/z.txt") == b"22"
    assert logs == [
        OutputFileLog(url=remote.url("results/top.txt"), path="/data/out/top.txt", size_bytes="1"),
        OutputFileLog(url=remote.url("results/x/w.txt"), path="/data/out/x/w.txt", size_bytes="3"),
        OutputFileLog(url=remote.url("results/x/y/z.txt"), path="/data/out/x/y/z.txt", size_bytes="2"),
    ]


async def test_wildcard_outputs_go_to_url_plus_the_match_minus_the_prefix(
    remote: Remote, workspace: LocalWorkspace, stager: Stager
) -> None:
    write(workspace, "/data/out/a.bam", b"A")
    write(workspace, "/data/out/b.bam", b"BB")
    write(workspace, "/data/out/c.txt", b"no")
    write(workspace, "/data/out/run-1/d.bam", b"D")
    outputs = [
        NewOutput(path="/data/out/*.bam", url=remote.url("bams"), path_prefix="/data/out/"),
        NewOutput(path="/data/out/run-*", url=remote.url("runs/"), path_prefix="/data/out"),
        NewOutput(path="/data/out/*.cram", url=remote.url("crams"), path_prefix="/data/out"),
    ]
    logs = await stager.stage_out(task(outputs=outputs), workspace)
    assert remote.keys("bams") == ["bams/a.bam", "bams/b.bam"]
    assert remote.keys("runs") == ["runs/run-1/d.bam"]
    assert remote.keys("crams") == []  # matching nothing is not an error
    assert [(log.path, log.size_bytes) for log in logs] == [
        ("/data/out/a.bam", "1"),
        ("/data/out/b.bam", "2"),
        ("/data/out/run-1/d.bam", "1"),
    ]
    assert logs[0].url == remote.url("bams/a.bam")


async def test_a_file_output_goes_to_its_url(
    remote: Remote, workspace: LocalWorkspace, stager: Stager
) -> None:
    write(workspace, "/data/out/report.html", b"<html/>")
    t = task(outputs=[NewOutput(path="/data/out/report.html", url=remote.url("reports/r 1.html"))])
    logs = await stager.stage_out(t, workspace)
    assert remote.get("reports/r 1.html") == b"<html/>"
    assert logs == [
        OutputFileLog(url=remote.url("reports/r 1.html"), path="/data/out/report.html", size_bytes="7")
    ]


async def test_a_missing_object_fails_naming_the_input_and_its_url(
    remote: Remote, workspace: LocalWorkspace, stager: Stager
) -> None:
    remote.put("present.txt", b"x")
    inputs = [
        NewInput(path="/data/in/ok.txt", url=remote.url("present.txt")),
        NewInput(path="/data/in/gone.txt", url=remote.url("absent.txt"), name="sample"),
    ]
    with pytest.raises(StagingFailed) as failed:
        await stager.stage_in(task(inputs=inputs), workspace)
    message = str(failed.value)
    assert message.startswith("input 1 (sample) from ")
    assert "absent.txt" in message
    assert ": not found" in message
    assert not Path(workspace.root + "/data/in/gone.txt").exists()


async def test_a_missing_file_output_fails_and_reports_nothing(
    remote: Remote, workspace: LocalWorkspace, stager: Stager
) -> None:
    write(workspace, "/data/out/one.txt", b"1")
    outputs = [
        NewOutput(path="/data/out/one.txt", url=remote.url("o/one.txt")),
        NewOutput(path="/data/out/two.txt", url=remote.url("o/two.txt")),
    ]
    with pytest.raises(StagingFailed, match=r"^output 1 \(/data/out/two.txt\) to .*: not found"):
        await stager.stage_out(task(outputs=outputs), workspace)


async def test_inline_content_of_one_mebibyte_is_written_exactly(
    remote: Remote, workspace: LocalWorkspace, stager: Stager
) -> None:
    content = ("0123456789abcdef" * 65536)[: 1024 * 1024]
    t = task(inputs=[NewInput(path="/data/in/inline.txt", content=content)])
    await stager.stage_in(t, workspace)
    assert ws_file(workspace, "/data/in/inline.txt") == content.encode()


async def test_many_files_both_ways_in_parallel(
    remote: Remote, workspace: LocalWorkspace, stager: Stager
) -> None:
    blobs = {f"many/{i:03d}.dat": hashlib.sha256(str(i).encode()).digest() * (i + 1) for i in range(60)}
    for key, data in blobs.items():
        write(workspace, "/data/" + key, data)
    outputs = [NewOutput(path="/data/many", url=remote.url("many"), type=FileType.DIRECTORY)]
    logs = await stager.stage_out(task(outputs=outputs), workspace)
    assert len(logs) == 60
    assert {key: remote.get(key) for key in blobs} == blobs
