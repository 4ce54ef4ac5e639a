"""Real storage servers on 127.0.0.1 for the filer tests: moto (S3), pyftpdlib (FTP), a plain HTTP
server that answers GET and PUT, and Azurite (Azure Blob, installed from npm by scripts/test)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.postgres import free_port

AZURITE_HOME = Path.home() / ".cache" / "poiesis-azurite"
AZURITE_BIN = AZURITE_HOME / "node_modules" / ".bin" / "azurite-blob"
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, seconds: float = 30) -> None:
    import socket

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"server did not listen on {port}: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def serving(command: list[str], port: int, log: Path, env: dict[str, str] | None = None) -> Iterator[None]:
    """Run `command` while the block runs, once it listens on 127.0.0.1:`port`; stop it after."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=os.environ | (env or {})
        )
    try:
        _wait_for_port(port, process, log)
        yield
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class S3:
    endpoint: str
    key_id: str
    secret: str

    def options(self) -> dict[str, str]:
        return {
            "endpoint": self.endpoint,
            "access_key_id": self.key_id,
            "secret_access_key": self.secret,
            "region": "us-east-1",
        }

    def endpoints(self) -> str:
        """An endpoints file (`storage_endpoints_file`) giving every `s3://` URL this server."""
        options = ", ".join(f'{k} = "{v}"' for k, v in self.options().items())
        return f'[[endpoint]]\nurl = "s3://"\noptions = {{ {options} }}\n'

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.secret,
            region_name="us-east-1",
        )


DENIED_BUCKET = "denied-bucket"


@contextlib.contextmanager
def moto_s3(log_dir: Path) -> Iterator[S3]:
    """moto in server mode with authorization on: the filer's key may do anything in S3 except
    touch the bucket `DENIED_BUCKET`."""
    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    moto = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with serving(moto, port, log_dir / "moto.log", {"INITIAL_NO_AUTH_ACTION_COUNT": "3"}):
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            aws_access_key_id="x",
            aws_secret_access_key="x",
            region_name="us-east-1",
        )
        iam.create_user(UserName="filer")
        key = iam.create_access_key(UserName="filer")["AccessKey"]
        denied = [f"arn:aws:s3:::{DENIED_BUCKET}", f"arn:aws:s3:::{DENIED_BUCKET}/*"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
                {"Effect": "Deny", "Action": "s3:*", "Resource": denied},
            ],
        }
        iam.put_user_policy(UserName="filer", PolicyName="filer", PolicyDocument=json.dumps(policy))
        yield S3(endpoint=endpoint, key_id=key["AccessKeyId"], secret=key["SecretAccessKey"])


@dataclass(frozen=True)
class Ftp:
    host: str
    port: int
    user: str
    password: str
    root: Path

    def url(self, path: str, *, with_credentials: bool = True) -> str:
        auth = f"{self.user}:{self.password}@" if with_credentials else ""
        return f"ftp://{auth}{self.host}:{self.port}/{path.lstrip('/')}"


@contextlib.contextmanager
def ftp_server(root: Path) -> Iterator[Ftp]:
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import ThreadedFTPServer

    root.mkdir(parents=True, exist_ok=True)
    authorizer = DummyAuthorizer()
    authorizer.add_user("tes", "ftp-secret-pw", str(root), perm="elradfmwMT")
    handler = type("Handler", (FTPHandler,), {"authorizer": authorizer, "passive_ports": None})
    handler.masquerade_address = None
    server = ThreadedFTPServer(("127.0.0.1", 0), handler)
    server.max_cons = 256
    port = server.socket.getsockname()[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"timeout": 0.2}, daemon=True)
    thread.start()
    try:
        yield Ftp("127.0.0.1", port, "tes", "ftp-secret-pw", root)
    finally:
        server.close_all()
        thread.join(5)


class _GetPut(http.server.SimpleHTTPRequestHandler):
    """GET serves files under the directory; PUT streams the body into it. Paths under /deny/
    answer 403, /flaky/ answers 503 twice per path before working."""

    protocol_version = "HTTP/1.1"
    flaky: dict[str, int] = {}

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _refuse(self) -> bool:
        path = self.path.split("?")[0]
        if path.startswith("/deny/"):
            self.send_error(403)
            return True
        if path.startswith("/flaky/") and self.flaky.get(path, 0) < 2:
            self.flaky[path] = self.flaky.get(path, 0) + 1
            self.send_error(503)
            return True
        return False

    def do_GET(self) -> None:
        if not self._refuse():
            super().do_GET()

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        if self._refuse():
            self.rfile.read(length)
            return
        target = Path(self.translate_path(self.path))
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            remaining = length
            while remaining:
                chunk = self.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                out.write(chunk)
                remaining -= len(chunk)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()


@dataclass(frozen=True)
class Http:
    base: str
    root: Path


@contextlib.contextmanager
def http_server(root: Path) -> Iterator[Http]:
    root.mkdir(parents=True, exist_ok=True)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_GetPut, directory=str(root))
    )
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    try:
        yield Http(f"http://127.0.0.1:{server.server_address[1]}", root)
    finally:
        server.shutdown()
        server.server_close()


@dataclass(frozen=True)
class Azure:
    endpoint: str

    def options(self) -> dict[str, str]:
        return {"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY, "endpoint": self.endpoint}

    def create_container(self, name: str) -> None:
        from azure.storage.blob import BlobServiceClient

        connection = (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={self.endpoint};"
        )
        BlobServiceClient.from_connection_string(connection).create_container(name)


def azurite_missing() -> str | None:
    if AZURITE_BIN.exists():
        return None
    return f"Azurite is not installed: run scripts/test, or `npm install --prefix {AZURITE_HOME} azurite@3`"


@contextlib.contextmanager
def azurite(work: Path) -> Iterator[Azure]:
    port = free_port()
    node = shutil.which("node")
    command = [
        str(AZURITE_BIN),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--location",
        str(work),
        "--skipApiVersionCheck",
        "--loose",
        "--silent",
    ]
    env = {"PATH": f"{Path(node).parent}:{os.environ.get('PATH', '')}"} if node else {}
    with serving(command, port, work / "azurite.log", env):
        yield Azure(endpoint=f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}")
