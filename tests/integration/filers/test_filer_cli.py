"""`poiesis filer` as the tif/tof containers run it: task JSON in, report and exit code out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import msgspec

from poiesis.domain.submission import NewInput, NewOutput
from poiesis.domain.tes import FileType
from tests.builders import make_task
from tests.conftest import FakeClock
from tests.support import storage


def filer(
    direction: str, task_file: Path, root: Path, tmp: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "poiesis.entrypoints.cli",
            "filer",
            direction,
            "--task",
            str(task_file),
            "--root",
            str(root),
            "--report",
            str(tmp / f"{direction}.json"),
            "--termination-log",
            str(tmp / f"{direction}.termination"),
        ],
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_stage_in_then_stage_out_with_credentials_from_the_endpoints_file(
    s3_server: storage.S3, tmp_path: Path
) -> None:
    client = s3_server.client()
    client.create_bucket(Bucket="cli-data")
    client.put_object(Bucket="cli-data", Key="in/ref/a.fa", Body=b">a\nAC\n")
    client.put_object(Bucket="cli-data", Key="in/ref/sub/b.fa", Body=b">b\nGT\n")
    endpoints = tmp_path / "endpoints.toml"
    opts = s3_server.options()
    endpoints.write_text(
        '[[endpoint]]\nurl = "s3://cli-data/"\noptions = { '
        + ", ".join(f'{k} = "{v}"' for k, v in opts.items())
        + " }\n"
    )
    env = {"POIESIS_STORAGE_ENDPOINTS_FILE": str(endpoints), "POIESIS_LOG_FORMAT": "text"}
    task = make_task(
        FakeClock(),
        inputs=[NewInput(path="/data/ref", url="s3://cli-data/in/ref", type=FileType.DIRECTORY)],
        outputs=[NewOutput(path="/data/ref/*.fa", url="s3://cli-data/out/", path_prefix="/data/ref")],
    )
    task_file = tmp_path / "task.json"
    task_file.write_bytes(msgspec.json.encode(task))
    root = tmp_path / "volume"

    staged = filer("stage-in", task_file, root, tmp_path, env)
    assert staged.returncode == 0, staged.stderr
    assert (root / "data/ref/sub/b.fa").read_bytes() == b">b\nGT\n"
    assert json.loads((tmp_path / "stage-in.json").read_text())["bytes"] == 12

    uploaded = filer("stage-out", task_file, root, tmp_path, env)
    assert uploaded.returncode == 0, uploaded.stderr
    report = json.loads((tmp_path / "stage-out.json").read_text())
    assert report["outputs"] == [
        {"url": "s3://cli-data/out/a.fa", "path": "/data/ref/a.fa", "size_bytes": "6"}
    ]
    assert client.get_object(Bucket="cli-data", Key="out/a.fa")["Body"].read() == b">a\nAC\n"
    assert s3_server.secret not in staged.stderr + uploaded.stderr


def test_a_failed_stage_in_exits_1_with_the_line_in_the_termination_log(
    s3_server: storage.S3, tmp_path: Path
) -> None:
    task = make_task(FakeClock(), inputs=[NewInput(path="/data/in/x", url="s3://no-such-bucket-here/x")])
    task_file = tmp_path / "task.json"
    task_file.write_bytes(msgspec.json.encode(task))
    env = {
        "AWS_ENDPOINT": s3_server.endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": s3_server.key_id,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret,
        "AWS_REGION": "us-east-1",
        "POIESIS_FILER_RETRY_SECONDS": "1",
    }
    result = filer("stage-in", task_file, tmp_path / "volume", tmp_path, env)
    assert result.returncode == 1
    line = (tmp_path / "stage-in.termination").read_text()
    assert line.startswith("input 0 (/data/in/x) from s3://no-such-bucket-here/x: not found")
    assert json.loads((tmp_path / "stage-in.json").read_text())["error"] == line
    assert line in result.stderr
