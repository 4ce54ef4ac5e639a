"""Where file URLs and plain paths may point (`domain.areas`), checked at the door, and the shared
volumes on Kubernetes: settings, the mounts of a Pod, and the filers' files used in place."""

from __future__ import annotations

import asyncio
import os
import posixpath
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from poiesis.adapters.kubernetes.render import PodSettings, render_pod_spec
from poiesis.adapters.kubernetes.shared import Nfs, SharedVolume
from poiesis.adapters.storage.local import LocalFiles
from poiesis.domain.areas import Area, file_path, url_problem
from poiesis.domain.errors import InvalidTask
from poiesis.domain.submission import NewInput, NewOutput, NewTask, Rules, accept
from poiesis.domain.tes import Executor, FileType

SCRATCH = Area(path="/scratch", in_place=True)
REFS = Area(path="/refs", read_only=True, in_place=True)
LAB = Area(path="/lab", owners=frozenset({"alice"}))
STAGED = Area(path="/staged")
RULES = Rules(file_areas=(SCRATCH, REFS, LAB, STAGED))


def submit(owner: str | None = "bob", rules: Rules = RULES, **fields: Any) -> Any:
    new = NewTask(**{"executors": [Executor(image="alpine", command=["true"])]} | fields)
    return accept(new, task_id="t", creation_time="2026-01-01T00:00:00Z", rules=rules, owner=owner).task


def refused(**fields: Any) -> InvalidTask:
    with pytest.raises(InvalidTask) as caught:
        submit(**fields)
    return caught.value


def test_a_nextflow_work_dir_on_the_shared_volume_is_used_in_place_and_copies_elsewhere_are_allowed() -> None:
    work = "/scratch/work/ab/cdef"
    task = submit(
        inputs=[
            NewInput(path=f"{work}/.command.run", url=f"{work}/.command.run"),
            NewInput(path="/work/.command.sh", url=f"file://{work}/.command.sh"),  # copied in
            NewInput(path="/refs/hg38", url="/refs/hg38", type=FileType.DIRECTORY),
        ],
        outputs=[
            NewOutput(path=f"{work}/.exitcode", url=f"file://{work}/.exitcode"),
            NewOutput(path="/work/out/*.bam", path_prefix="/work/out", url=f"{work}/out"),
            NewOutput(path=f"{work}/res/*.txt", path_prefix=f"{work}/res", url=f"{work}/res/"),
        ],
    )
    assert len(task.inputs) == 3
    assert len(task.outputs) == 3


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        (
            {"inputs": [NewInput(path="/data/x", url="/etc/passwd")]},
            "inputs[0].url",
            "outside the directories",
        ),
        (
            {"inputs": [NewInput(path="/data/x", url="file:///scratch/../etc/passwd")]},
            "inputs[0].url",
            "normalized",
        ),
        ({"inputs": [NewInput(path="/data/x", url="/scratch//x")]}, "inputs[0].url", "normalized"),
        (
            {"inputs": [NewInput(path="/data/x", url="file://host/scratch/x")]},
            "inputs[0].url",
            "names a host",
        ),
        ({"inputs": [NewInput(path="/data/x", url="file:///scratch/a%00b")]}, "inputs[0].url", "NUL"),
        ({"inputs": [NewInput(path="/data/x", url="/lab/x")]}, "inputs[0].url", "outside the directories"),
        ({"outputs": [NewOutput(path="/data/x", url="/refs/x")]}, "outputs[0].url", "read-only"),
        ({"inputs": [NewInput(path="/scratch/a", url="s3://b/a")]}, "inputs[0].path", "its URL's own file"),
        ({"inputs": [NewInput(path="/scratch/a", url="/scratch/b")]}, "inputs[0].path", "its URL's own file"),
        (
            {"outputs": [NewOutput(path="/scratch/a", url="/staged/a")]},
            "outputs[0].path",
            "its URL's own file",
        ),
        ({"volumes": ["/scratch/tmp"]}, "volumes[0]", "shared volume"),
        (
            {
                "inputs": [NewInput(path="/refs/x", url="/refs/x")],
                "executors": [Executor(image="alpine", command=["true"], stdout="/refs/out.txt")],
            },
            "executors[0].stdout",
            "read-only",
        ),
    ],
)
def test_file_urls_outside_their_areas_or_not_in_place_are_refused_naming_the_field(
    fields: dict[str, Any], field: str, words: str
) -> None:
    error = refused(**fields)
    assert error.field == field
    assert words in error.message


def test_an_area_open_to_some_owners_is_theirs_alone_and_not_named_to_others() -> None:
    submit(owner="alice", inputs=[NewInput(path="/data/x", url="/lab/x")])
    error = refused(inputs=[NewInput(path="/data/x", url="/lab/x")])
    assert "/lab" not in error.message.replace("'/lab/x'", ""), "another owner's area is not listed"
    # Nor does another owner's in-place area bind this task's own paths: it is not in its Pod.
    theirs = Rules(file_areas=(Area(path="/lab", in_place=True, owners=frozenset({"alice"})), STAGED))
    submit(rules=theirs, inputs=[NewInput(path="/lab/x", url="s3://bucket/x")])
    with pytest.raises(InvalidTask, match="its URL's own file"):
        submit(owner="alice", rules=theirs, inputs=[NewInput(path="/lab/x", url="s3://bucket/x")])


def test_without_areas_file_urls_are_off_and_unchecked_rules_leave_them_to_the_filers() -> None:
    off = Rules(file_areas=())
    with pytest.raises(InvalidTask, match="not enabled"):
        submit(rules=off, inputs=[NewInput(path="/data/x", url="file:///data/x")])
    submit(rules=Rules(), inputs=[NewInput(path="/data/x", url="file:///anywhere/x")])
    # Other schemes are not the areas' business.
    submit(rules=off, inputs=[NewInput(path="/data/x", url="s3://bucket/x")])


segment = st.sampled_from(["a", "b", "..", ".", "", "scratch", "etc", "%2e%2e", "refs"])


@given(st.lists(segment, min_size=1, max_size=6), st.booleans(), st.booleans())
def test_an_accepted_file_url_always_lies_inside_an_area_open_to_its_owner(
    parts: list[str], as_url: bool, writes: bool
) -> None:
    path = "/" + "/".join(parts)
    url = f"file://{path}" if as_url else path
    if url_problem(url, writes=writes, owner="bob", areas=RULES.file_areas or ()) is None:
        named = file_path(url)
        assert posixpath.normpath(named) == named.rstrip("/"), f"{url} accepted, not normalized"
        holders = [a for a in (SCRATCH, REFS, STAGED) if a.holds(named.rstrip("/"))]
        assert holders, f"{url} accepted outside every area open to its owner"
        assert not (writes and all(a.read_only for a in holders)), f"{url} written on a read-only area"


# Kubernetes: shared volumes


WORK = SharedVolume(name="work", path="/scratch", claim="scratch-rwx")
REF = SharedVolume(name="refs", path="/refs", claim="refs", read_only=True)
STAGE = SharedVolume(name="staged", path="/staged", claim="staged", mode="stage")


def pod(task: Any, *volumes: SharedVolume) -> dict[str, dict[str, Any]]:
    spec = render_pod_spec(task, PodSettings(shared_volumes=list(volumes)))
    containers = {c["name"]: c for c in spec["initContainers"]}
    containers["volumes"] = {v["name"]: v for v in spec["volumes"]}
    return containers


def mounts(container: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    return {m["mountPath"]: (m["name"], bool(m.get("readOnly"))) for m in container["volumeMounts"]}


def test_a_task_on_a_shared_volume_gets_it_mounted_where_it_serves_and_nothing_of_the_task_volume_there() -> (
    None
):
    work = "/scratch/work/ab"
    rules = Rules(file_areas=PodSettings(shared_volumes=[WORK, REF, STAGE]).areas)
    task = submit(
        rules=rules,
        inputs=[
            NewInput(path=f"{work}/.command.run", url=f"{work}/.command.run"),
            NewInput(path="/data/in/ref.fa", url="/staged/ref.fa"),
        ],
        outputs=[NewOutput(path=f"{work}/.exitcode", url=f"{work}/.exitcode")],
        executors=[
            Executor(image="alpine", command=["sh", f"{work}/.command.run"], stdout=f"{work}/.command.out")
        ],
    )
    c = pod(task, WORK, REF, STAGE)
    assert c["volumes"]["shared-work"] == {
        "name": "shared-work",
        "persistentVolumeClaim": {"claimName": "scratch-rwx"},
    }
    assert "shared-refs" not in c["volumes"], "a volume the task does not name is not in its Pod"
    executor = mounts(c["executor-0"])
    assert executor["/scratch"] == ("shared-work", False)
    assert "/staged" not in executor, "a staged volume is the filers' alone"
    assert not [p for p, (name, _) in executor.items() if name == "task-volume" and p.startswith("/scratch")]
    assert executor["/data/in"] == ("task-volume", False)
    assert not [p for p, (name, _) in executor.items() if name.startswith("redirect-")], (
        "stdout is on the volume"
    )
    tif, tof = mounts(c["tif"]), mounts(c["tof"])
    assert tif["/scratch"] == tif["/tes/volume/scratch"] == ("shared-work", True)
    assert tif["/staged"] == ("shared-staged", True)
    assert "/tes/volume/staged" not in tif
    assert tof["/scratch"] == tof["/tes/volume/scratch"] == ("shared-work", False)
    for filer in (c["tif"], c["tof"]):
        roots = next(e["value"] for e in filer["env"] if e["name"] == "POIESIS_FILE_ROOTS")
        assert sorted(roots.split(",")) == ["/scratch", "/staged"]


def test_a_read_only_nfs_volume_is_read_only_in_every_container() -> None:
    refs = SharedVolume(
        name="refs", path="/refs", nfs=Nfs(server="10.0.0.5", path="/export/refs"), read_only=True
    )
    task = submit(
        rules=Rules(file_areas=(refs.area(),)),
        inputs=[NewInput(path="/refs/hg38", url="/refs/hg38", type=FileType.DIRECTORY)],
    )
    c = pod(task, refs)
    assert c["volumes"]["shared-refs"] == {
        "name": "shared-refs",
        "nfs": {"server": "10.0.0.5", "path": "/export/refs", "readOnly": True},
    }
    assert mounts(c["executor-0"])["/refs"] == ("shared-refs", True)
    assert all(ro for name, ro in mounts(c["tif"]).values() if name == "shared-refs")


def test_without_shared_volumes_the_filers_open_no_file_urls() -> None:
    task = submit(rules=Rules(), inputs=[NewInput(path="/data/x", url="s3://b/x")])
    tif = pod(task)["tif"]
    assert {"name": "POIESIS_FILE_ROOTS", "value": ""} in tif["env"]


@pytest.mark.parametrize(
    ("volumes", "words"),
    [
        ([{"name": "a", "path": "/x"}], "exactly one of claim and nfs"),
        ([{"name": "a", "path": "/x", "claim": "c", "nfs": {"server": "s", "path": "/e"}}], "exactly one"),
        ([{"name": "A_b", "path": "/x", "claim": "c"}], "DNS label"),
        ([{"name": "a", "path": "/", "claim": "c"}], "other than /"),
        ([{"name": "a", "path": "/x/../y", "claim": "c"}], "'..'"),
        ([{"name": "a", "path": "/tes/x", "claim": "c"}], "every task Pod needs"),
        ([{"name": "a", "path": "/var", "claim": "c"}], "every task Pod needs"),
        (
            [{"name": "a", "path": "/x", "claim": "c"}, {"name": "b", "path": "/x/y", "claim": "d"}],
            "overlaps",
        ),
        ([{"name": "a", "path": "/x", "claim": "c"}, {"name": "a", "path": "/y", "claim": "d"}], "also"),
        ([{"name": "a", "path": "/x", "nfs": {"server": "s", "path": "/e"}}], "restricted Pod Security"),
    ],
)
def test_shared_volumes_that_cannot_work_are_refused_at_start(
    volumes: list[dict[str, Any]], words: str
) -> None:
    security = "restricted" if "restricted" in words else "default"
    with pytest.raises(msgspec.ValidationError, match=words):
        msgspec.convert({"shared_volumes": volumes, "executor_security": security}, PodSettings)


# The filers: a file already where it is to go


def test_a_file_seen_at_its_url_and_its_path_is_not_copied_nor_lost(tmp_path: Path) -> None:
    shared = tmp_path / "scratch"
    shared.mkdir()
    (shared / "f").write_text("kept")
    # The shared volume seen twice, as the filers see it in mode "mount": at its path and on the
    # task volume's root (here a bind is a second name of the same directory).
    view = tmp_path / "volume"
    view.mkdir()
    os.symlink(shared, view / "scratch")
    files = LocalFiles([str(shared)])
    assert asyncio.run(files.download(f"file://{shared}/f", str(view / "scratch" / "f"))) == 4
    assert asyncio.run(files.upload(str(view / "scratch" / "f"), f"{shared}/f")) == 4
    assert (shared / "f").read_text() == "kept"
