"""Shared volumes on the real node: a directory of this machine stands in for the cluster's shared
filesystem (a hostPath PersistentVolume, ReadWriteMany, bound to a claim in the task namespace, as
an NFS or Lustre volume would be). The operator declares three:

    /scratch   the workflow engines' work dirs, mounted into the executors (files used in place)
    /refs      reference data, read-only, mounted in place
    /drop      staged: only the filers see it, executors get copies

A Nextflow-shaped task (work dir of plain paths, `bash .command.run`, `.exitcode` written by the
task) completes with its files in the work dir and no copy of them; the classic TES shape (inputs
copied to /work, outputs copied back) completes too; the door refuses what lies outside the volumes
and a link that leaves a volume is refused where it is followed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import tes
from kubernetes import client

from tests.conftest import fresh_postgres_url_sync
from tests.integration.realnode.test_taskpods import BUSYBOX, Node, namespace, tctl
from tests.support.realnode import database_secret, write_config
from tests.support.server import running_server

pytestmark = [pytest.mark.postgres, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

VOLUMES = {"scratch": ("mount", False), "refs": ("mount", True), "drop": ("stage", False)}


@dataclass
class Shared(Node):
    dirs: dict[str, Path] = field(default_factory=dict)


def _persistent_volume(core: Any, space: str, name: str, directory: Path) -> str:
    """A hostPath PV bound to claim `name` in `space` (no provisioner: bound by name)."""
    pv = f"{space}-{name}"
    core.create_persistent_volume(
        {
            "metadata": {"name": pv},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteMany"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": str(directory), "type": "Directory"},
                "claimRef": {"namespace": space, "name": name},
            },
        }
    )
    core.create_namespaced_persistent_volume_claim(
        space,
        {
            "metadata": {"name": name},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "volumeName": pv,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    return pv


@pytest.fixture(scope="module")
def shared(
    real_api: client.ApiClient,
    real_kubeconfig: str,
    api_server: str,
    postgres_server: str,
    postgres_template: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Shared]:
    core: Any = client.CoreV1Api(real_api)
    work = tmp_path_factory.mktemp("shared")
    dirs = {name: work / name for name in VOLUMES}
    for d in dirs.values():
        d.mkdir()
        d.chmod(0o777)  # the filers run as the Pod's fsGroup user; a hostPath keeps its owner
    (dirs["refs"] / "hg38.fa").write_text(">chr1\nACGT\n")
    database_url = fresh_postgres_url_sync(postgres_server, postgres_template)
    pvs: list[str] = []
    try:
        with namespace(core) as space:
            database_secret(core, space, database_url)
            pvs = [_persistent_volume(core, space, name, d) for name, d in dirs.items()]
            tables = "".join(
                f'[[kubernetes.shared_volumes]]\nname = "{name}"\npath = "/{name}"\nclaim = "{name}"\n'
                f'mode = "{mode}"\nread_only = {str(ro).lower()}\n'
                for name, (mode, ro) in VOLUMES.items()
            )
            config = write_config(
                work / "poiesis.toml",
                real_kubeconfig,
                space,
                api_server,
                tables + "[tctl]\nstart_timeout_seconds = 30\nended_grace_seconds = 5\nresync_seconds = 5\n",
                ttl_seconds_after_finished=60,
            )
            env = {"POIESIS_CONFIG": str(config), "POIESIS_LOG_FORMAT": "text"}
            with running_server("api", database_url, work, env) as server, tctl(work, env, database_url):
                yield Shared(server, tes.HTTPClient(server.url, timeout=20), core, space, None, "", dirs)  # type: ignore[arg-type]
    finally:
        for pv in pvs:
            core.delete_persistent_volume(pv)


def test_a_nextflow_shaped_task_runs_in_its_work_dir_on_the_shared_volume_with_no_copy(
    shared: Shared,
) -> None:
    host = shared.dirs["scratch"] / "work" / "ab" / "cdef0123"
    host.mkdir(parents=True)
    host.chmod(0o777)
    work = "/scratch/work/ab/cdef0123"
    (host / ".command.sh").write_text("cat /refs/hg38.fa > out.txt; stat -c %i .command.run > inode\n")
    (host / ".command.run").write_text(f"cd {work}; sh .command.sh > .command.out; echo $? > .exitcode\n")
    task_id = shared.client.create_task(
        tes.Task(
            inputs=[
                tes.Input(path=f"{work}/.command.run", url=f"{work}/.command.run"),
                tes.Input(path=f"{work}/.command.sh", url=f"{work}/.command.sh"),
                tes.Input(path="/refs/hg38.fa", url="/refs/hg38.fa"),
            ],
            outputs=[
                tes.Output(path=f"{work}/out.txt", url=f"{work}/out.txt"),
                tes.Output(path=f"{work}/.exitcode", url=f"{work}/.exitcode"),
            ],
            executors=[tes.Executor(image=BUSYBOX, command=["sh", f"{work}/.command.run"])],
        )
    )
    task = shared.wait(task_id, timeout=180)
    assert task.state == "COMPLETE", (task.logs[0].system_logs, shared.describe(task_id))
    assert (host / ".exitcode").read_text().strip() == "0"
    assert (host / "out.txt").read_text() == ">chr1\nACGT\n"
    # The executor saw the host's own file, not a copy on the task volume.
    assert int((host / "inode").read_text()) == os.stat(host / ".command.run").st_ino
    sizes = {o.url: int(o.size_bytes) for o in task.logs[0].outputs}
    assert sizes == {f"{work}/out.txt": 11, f"{work}/.exitcode": 2}
    (pod,) = shared.pods(task_id)
    executor = next(c for c in pod.spec.init_containers if c.name == "executor-0")
    mounts = {m.mount_path: (m.name, bool(m.read_only)) for m in executor.volume_mounts}
    assert mounts["/scratch"] == ("shared-scratch", False)
    assert mounts["/refs"] == ("shared-refs", True)
    assert "/drop" not in mounts
    assert not [p for p, (name, _) in mounts.items() if name == "task-volume"], "nothing to copy in or out"


def test_the_classic_shape_copies_from_and_to_the_shared_volumes(shared: Shared) -> None:
    """What Nextflow's TES executor sends when its work dir is not where the executors look: inputs
    copied to /work, outputs copied back; one volume is staged, never seen by the executors."""
    drop = shared.dirs["drop"]
    (drop / "sample.txt").write_text("b\na\n")
    task_id = shared.client.create_task(
        tes.Task(
            inputs=[
                tes.Input(path="/work/sample.txt", url="file:///drop/sample.txt"),
                tes.Input(path="/work/ref.fa", url="/refs/hg38.fa"),
            ],
            outputs=[
                tes.Output(path="/work/sorted.txt", url="/drop/out/sorted.txt"),
                tes.Output(path="/work/ref-copy.fa", url="/scratch/ref-copy.fa"),
            ],
            executors=[
                tes.Executor(
                    image=BUSYBOX,
                    command=[
                        "sh",
                        "-c",
                        "ls /drop 2>&1; sort sample.txt > sorted.txt; cp ref.fa ref-copy.fa",
                    ],
                    workdir="/work",
                )
            ],
        )
    )
    task = shared.wait(task_id, timeout=180)
    assert task.state == "COMPLETE", (task.logs[0].system_logs, shared.describe(task_id))
    assert "No such file or directory" in task.logs[0].logs[0].stdout, "the staged volume is not mounted"
    assert (drop / "out" / "sorted.txt").read_text() == "a\nb\n"
    assert (shared.dirs["scratch"] / "ref-copy.fa").read_text() == ">chr1\nACGT\n"


def test_the_door_refuses_what_lies_outside_the_volumes_or_would_write_reference_data(shared: Shared) -> None:
    cases = [
        ({"inputs": [{"path": "/work/x", "url": "/etc/passwd"}]}, "inputs[0].url"),
        ({"inputs": [{"path": "/work/x", "url": "file:///scratch/../etc/passwd"}]}, "inputs[0].url"),
        ({"outputs": [{"path": "/work/x", "url": "/refs/x"}]}, "outputs[0].url"),
        ({"inputs": [{"path": "/scratch/x", "url": "/drop/x"}]}, "inputs[0].path"),
    ]
    for body, named in cases:
        body["executors"] = [{"image": BUSYBOX, "command": ["true"]}]
        response = httpx.post(f"{shared.server.tes}/tasks", json=body, timeout=10)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["field"] == named


def test_a_link_that_leaves_the_volume_is_refused_by_the_filer(shared: Shared) -> None:
    (shared.dirs["drop"] / "escape").symlink_to("/etc")
    task_id = shared.client.create_task(
        tes.Task(
            inputs=[tes.Input(path="/work/passwd", url="/drop/escape/passwd")],
            executors=[tes.Executor(image=BUSYBOX, command=["cat", "/work/passwd"])],
        )
    )
    task = shared.wait(task_id, timeout=180)
    assert task.state == "SYSTEM_ERROR"
    assert any("outside the directories" in line for line in task.logs[0].system_logs), task.logs[
        0
    ].system_logs
    assert not task.logs[0].logs, "no executor ran"
