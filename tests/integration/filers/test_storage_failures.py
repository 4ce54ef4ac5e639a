"""How staging fails: each cause a user meets, named in words they can act on, with no secret shown."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from poiesis.adapters.storage.endpoints import Endpoint
from poiesis.adapters.storage.router import StorageRouter
from poiesis.adapters.storage.workspace import LocalWorkspace
from poiesis.domain.submission import NewInput, NewOutput
from poiesis.domain.tes import FileType
from poiesis.services.staging import Stager, StagingFailed
from tests.builders import make_task
from tests.conftest import FakeClock
from tests.support import storage
from tests.support.postgres import free_port


@pytest.fixture
def workspace(tmp_path: Path) -> LocalWorkspace:
    (tmp_path / "ws").mkdir()
    return LocalWorkspace(str(tmp_path / "ws"))


async def stage_in_error(router: StorageRouter, workspace: LocalWorkspace, url: str) -> str:
    task = make_task(FakeClock(), inputs=[NewInput(path="/data/in/x", url=url)])
    async with router:
        with pytest.raises(StagingFailed) as failed:
            await Stager(router).stage_in(task, workspace)
    return str(failed.value)


async def test_a_denied_bucket_says_access_denied_and_shows_no_key(
    s3_server: storage.S3, workspace: LocalWorkspace
) -> None:
    router = StorageRouter(endpoints=[Endpoint(url="s3://", options=s3_server.options())], retry_seconds=2)
    message = await stage_in_error(router, workspace, f"s3://{storage.DENIED_BUCKET}/data.bam")
    assert message.startswith(
        f"input 0 (/data/in/x) from s3://{storage.DENIED_BUCKET}/data.bam: access denied"
    )
    assert s3_server.secret not in message


async def test_wrong_s3_credentials_say_access_denied(
    s3_server: storage.S3, workspace: LocalWorkspace
) -> None:
    options = s3_server.options() | {"secret_access_key": "wrong-secret-value"}
    router = StorageRouter(endpoints=[Endpoint(url="s3://", options=options)], retry_seconds=2)
    message = await stage_in_error(router, workspace, "s3://any-bucket/k")
    assert ": access denied" in message
    assert "wrong-secret-value" not in message


@pytest.mark.parametrize("scheme", ["s3", "http", "ftp", "az"])
async def test_an_unreachable_host_fails_as_unreachable_after_bounded_retries(
    scheme: str, workspace: LocalWorkspace
) -> None:
    port = free_port()  # nothing listens there
    endpoints = {
        "s3": [
            Endpoint(url="s3://", options={"endpoint": f"http://127.0.0.1:{port}", "skip_signature": True})
        ],
        "az": [
            Endpoint(
                url="az://",
                options={
                    "account_name": "acct",
                    "account_key": "a2V5",
                    "endpoint": f"http://127.0.0.1:{port}/acct",
                },
            )
        ],
    }.get(scheme, [])
    url = {
        "s3": "s3://bucket/key",
        "http": f"http://127.0.0.1:{port}/key",
        "ftp": f"ftp://127.0.0.1:{port}/key",
        "az": "az://container/key",
    }[scheme]
    message = await stage_in_error(StorageRouter(endpoints=endpoints, retry_seconds=1), workspace, url)
    assert ": unreachable" in message, message


async def test_a_wrong_ftp_password_is_access_denied_and_never_shown(
    ftp: storage.Ftp, workspace: LocalWorkspace
) -> None:
    url = f"ftp://tes:not-the-password@127.0.0.1:{ftp.port}/file.txt"
    message = await stage_in_error(StorageRouter(retry_seconds=1), workspace, url)
    assert message.startswith(f"input 0 (/data/in/x) from ftp://127.0.0.1:{ftp.port}/file.txt: access denied")
    assert "not-the-password" not in message


async def test_ftp_credentials_can_come_from_the_endpoint_settings(
    ftp: storage.Ftp, workspace: LocalWorkspace
) -> None:
    (ftp.root / "by-endpoint.txt").write_bytes(b"ok")
    endpoint = Endpoint(
        url=ftp.url("", with_credentials=False), options={"username": "tes", "password": ftp.password}
    )
    task = make_task(
        FakeClock(),
        inputs=[NewInput(path="/data/in/x", url=ftp.url("by-endpoint.txt", with_credentials=False))],
    )
    async with StorageRouter(endpoints=[endpoint]) as router:
        await Stager(router).stage_in(task, workspace)
    assert Path(workspace.root + "/data/in/x").read_bytes() == b"ok"


async def test_http_403_is_access_denied_and_a_presigned_signature_is_never_shown(
    http: storage.Http, workspace: LocalWorkspace
) -> None:
    url = f"{http.base}/deny/file.txt?X-Amz-Signature=deadbeefsecret"
    message = await stage_in_error(StorageRouter(retry_seconds=1), workspace, url)
    assert (
        message
        == f"input 0 (/data/in/x) from {http.base}/deny/file.txt: access denied: GET answered 403 Forbidden"
    )


async def test_http_inputs_keep_their_query_string_and_survive_transient_5xx(
    http: storage.Http, workspace: LocalWorkspace
) -> None:
    (http.root / "flaky").mkdir(exist_ok=True)
    (http.root / "flaky" / "data.txt").write_bytes(b"eventually")
    task = make_task(
        FakeClock(), inputs=[NewInput(path="/data/in/x", url=f"{http.base}/flaky/data.txt?sig=abc")]
    )
    async with StorageRouter(retry_seconds=10) as router:
        await Stager(router).stage_in(task, workspace)
    assert Path(workspace.root + "/data/in/x").read_bytes() == b"eventually"


async def test_http_headers_from_the_endpoint_settings_are_sent(
    workspace: LocalWorkspace, tmp_path: Path
) -> None:
    import http.server
    import threading

    seen: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    endpoint = Endpoint(url=base + "/", options={"headers": {"Authorization": "Bearer s3cr3t-token"}})
    task = make_task(FakeClock(), inputs=[NewInput(path="/data/in/x", url=f"{base}/f")])
    try:
        async with StorageRouter(endpoints=[endpoint]) as router:
            await Stager(router).stage_in(task, workspace)
    finally:
        server.shutdown()
        server.server_close()
    assert seen == ["Bearer s3cr3t-token"]


async def test_file_urls_outside_the_allowed_roots_are_refused(
    tmp_path: Path, workspace: LocalWorkspace
) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "escape").symlink_to("/etc")
    router = StorageRouter(file_roots=[str(allowed)])
    for url in ("file:///etc/hostname", f"file://{allowed}/escape/hostname", f"file://{allowed}/../ws/x"):
        message = await stage_in_error(router, workspace, url)
        assert ": access denied: outside the directories this server allows" in message
    message = await stage_in_error(StorageRouter(), workspace, "file:///etc/hostname")
    assert "file:// is not enabled on this server" in message


async def test_outputs_never_follow_links_out_of_the_workspace(
    tmp_path: Path, workspace: LocalWorkspace
) -> None:
    Path(workspace.local("/data/out/real.txt")).write_bytes(b"mine")
    os.symlink("/etc/hostname", workspace.local("/data/out/leak.txt"))
    os.symlink("/etc", workspace.local("/data/out/etc"))
    target = tmp_path / "target"
    target.mkdir()
    task = make_task(
        FakeClock(), outputs=[NewOutput(path="/data/out", url=f"file://{target}/", type=FileType.DIRECTORY)]
    )
    async with StorageRouter(file_roots=[str(target)]) as router:
        logs = await Stager(router).stage_out(task, workspace)
    assert [log.path for log in logs] == ["/data/out/real.txt"]
    assert sorted(p.name for p in target.rglob("*")) == ["real.txt"]


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return result.returncode == 0


async def test_a_full_disk_says_disk_full_and_leaves_no_partial_file(
    http: storage.Http, tmp_path: Path
) -> None:
    small = tmp_path / "small"
    if not _mount_tmpfs(small, "1m"):
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        (http.root / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
        workspace = LocalWorkspace(str(small))
        message = await stage_in_error(StorageRouter(), workspace, f"{http.base}/big.bin")
        assert ": disk full" in message
        assert not Path(workspace.root + "/data/in/x").exists()
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_gcs_urls_build_a_store_without_network() -> None:
    """No GCS emulator runs here: only the URL handling and store construction are checked."""
    from poiesis.adapters.storage.endpoints import Endpoints
    from poiesis.adapters.storage.objectstores import ObjectStores, split

    assert split("gs://bucket/a/b c.txt") == ("gs://bucket", "a/b c.txt")
    assert split("https://acct.blob.core.windows.net/cont/x/y") == (
        "https://acct.blob.core.windows.net/cont",
        "x/y",
    )
    stores = ObjectStores(Endpoints([Endpoint(url="gs://bucket", options={"skip_signature": True})]))
    store, path = stores._store("gs://bucket/a/b.txt")
    assert path == "a/b.txt"
    assert type(store).__name__ == "GCSStore"


async def test_a_missing_object_is_not_found_without_the_raw_response(
    s3_server: storage.S3, workspace: LocalWorkspace
) -> None:
    bucket = f"missing-{os.getpid()}"
    s3_server.client().create_bucket(Bucket=bucket)
    router = StorageRouter(endpoints=[Endpoint(url="s3://", options=s3_server.options())], retry_seconds=2)
    message = await stage_in_error(router, workspace, f"s3://{bucket}/no/such/object")
    assert ": not found" in message
    assert "<?xml" not in message
    assert "<Error" not in message
