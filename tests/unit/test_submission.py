from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from poiesis.domain.errors import InvalidRequest, InvalidTask
from poiesis.domain.staging import SCHEMES
from poiesis.domain.states import State
from poiesis.domain.submission import Rules, accept
from poiesis.domain.tes import FileType
from poiesis.services.tasks import decode_task

EXECUTOR = {"image": "alpine", "command": ["true"]}


def submit(body: dict[str, Any], rules: Rules | None = None) -> Any:
    new = decode_task(msgspec.json.encode(body))
    return accept(new, task_id="t", creation_time="2026-01-01T00:00:00Z", rules=rules or FILER_RULES)


FILER_RULES = Rules(url_schemes=SCHEMES)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({}, "executors", id="missing executors"),
        pytest.param({"executors": []}, "executors", id="no executor"),
        pytest.param({"executors": [{"image": "a"}]}, "executors[0].command", id="missing command"),
        pytest.param(
            {"executors": [{"image": "a", "command": "ls"}]}, "executors[0].command", id="command string"
        ),
        pytest.param(
            {"executors": [{"image": "", "command": ["x"]}]}, "executors[0].image", id="empty image"
        ),
        pytest.param(
            {"executors": [{"image": "a", "command": []}]}, "executors[0].command", id="empty command"
        ),
        *(
            pytest.param(
                {"executors": [EXECUTOR | {name: "relative/path"}]},
                f"executors[0].{name}",
                id=f"relative {name}",
            )
            for name in ("workdir", "stdin", "stdout", "stderr")
        ),
        pytest.param(
            {"executors": [EXECUTOR], "volumes": ["/ok", "tmp"]}, "volumes[1]", id="relative volume"
        ),
        pytest.param(
            {"executors": [EXECUTOR], "inputs": [{"path": "in", "content": "x"}]},
            "inputs[0].path",
            id="relative input",
        ),
        pytest.param(
            {"executors": [EXECUTOR], "inputs": [{"path": "/a/../b", "content": "x"}]},
            "inputs[0].path",
            id="dot-dot segment",
        ),
        pytest.param(
            {"executors": [EXECUTOR], "inputs": [{"path": "/data/in"}]},
            "inputs[0].url",
            id="no url no content",
        ),
        pytest.param(
            {
                "executors": [EXECUTOR],
                "inputs": [{"path": "/d/a", "content": "x"}, {"path": "/d/a/", "url": "s3://b/k"}],
            },
            "inputs[1].path",
            id="two inputs at one path",
        ),
        pytest.param(
            {"executors": [EXECUTOR], "outputs": [{"path": "/out/*.txt", "url": "s3://b/"}]},
            "outputs[0].path_prefix",
            id="wildcard without prefix",
        ),
        pytest.param(
            {
                "executors": [EXECUTOR],
                "outputs": [{"path": "/out/*.txt", "url": "s3://b/", "path_prefix": "/other/"}],
            },
            "outputs[0].path_prefix",
            id="prefix not a prefix",
        ),
        pytest.param(
            {"executors": [EXECUTOR], "outputs": [{"path": "/out/a"}]}, "outputs[0].url", id="output url"
        ),
        pytest.param(
            {"executors": [EXECUTOR], "inputs": [{"path": "/in.txt", "content": "x"}]},
            "inputs[0].path",
            id="input file directly under /",
        ),
        pytest.param({"executors": [EXECUTOR], "volumes": ["/"]}, "volumes[0]", id="volume at /"),
        pytest.param(
            {"executors": [EXECUTOR], "outputs": [{"path": "/*.txt", "url": "s3://b/", "path_prefix": "/"}]},
            "outputs[0].path",
            id="wildcard at the root",
        ),
        pytest.param(
            {"executors": [EXECUTOR], "inputs": [{"path": "/d/a", "url": "s4://bucket/key"}]},
            "inputs[0].url",
            id="unknown scheme",
        ),
        pytest.param(
            {"executors": [EXECUTOR], "inputs": [{"path": "/d/a", "url": "bucket/key"}]},
            "inputs[0].url",
            id="no scheme",
        ),
        pytest.param(
            {"executors": [EXECUTOR], "outputs": [{"path": "/d/a", "url": "gsutil://b/k"}]},
            "outputs[0].url",
            id="unknown output scheme",
        ),
        pytest.param(
            {"executors": [EXECUTOR], "resources": {"cpu_cores": 0}}, "resources.cpu_cores", id="zero cpu"
        ),
        pytest.param(
            {"executors": [EXECUTOR], "resources": {"ram_gb": -1}}, "resources.ram_gb", id="negative ram"
        ),
        pytest.param(
            {"executors": [EXECUTOR], "resources": {"cpu_cores": 1.5}}, "resources.cpu_cores", id="cpu float"
        ),
        pytest.param({"executors": [EXECUTOR], "tags": {"a": 1}}, "tags", id="tag value not a string"),
        pytest.param(
            {
                "executors": [EXECUTOR],
                "resources": {"backend_parameters": {"VmSize": "x"}, "backend_parameters_strict": True},
            },
            "resources.backend_parameters.VmSize",
            id="strict unsupported parameter",
        ),
        pytest.param(
            {"executors": [EXECUTOR], "inputs": [{"path": "/proc/self", "content": "x"}]},
            "inputs[0].path",
            id="input in /proc",
        ),
        pytest.param({"executors": [EXECUTOR], "volumes": ["/sys"]}, "volumes[0]", id="volume at /sys"),
        pytest.param(
            {"executors": [EXECUTOR], "outputs": [{"path": "/dev/shm/out", "url": "s3://b/o"}]},
            "outputs[0].path",
            id="output in /dev",
        ),
        pytest.param(
            {
                "executors": [EXECUTOR],
                "inputs": [
                    {"path": "/d/a", "content": "file"},
                    {"path": "/d/a/b", "content": "inside the file"},
                ],
            },
            "inputs[1].path",
            id="input inside a FILE input",
        ),
        pytest.param(
            {
                "executors": [EXECUTOR],
                "inputs": [{"path": "/d/a/b", "content": "x"}, {"path": "/d/a", "content": "file"}],
            },
            "inputs[0].path",
            id="input inside a FILE input given after it",
        ),
        pytest.param(
            {
                "executors": [EXECUTOR],
                "inputs": [{"path": "/d/a", "content": "file"}],
                "volumes": ["/d/a/scratch"],
            },
            "volumes[0]",
            id="volume inside a FILE input",
        ),
        pytest.param(
            {
                "executors": [EXECUTOR],
                "outputs": [
                    {"path": "/d/report", "url": "s3://b/r"},
                    {"path": "/d/report/x", "url": "s3://b/x"},
                ],
            },
            "outputs[1].path",
            id="output inside a FILE output",
        ),
    ],
)
def test_invalid_submissions_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        submit(body)
    assert caught.value.field == field


def test_malformed_json_is_a_body_error() -> None:
    with pytest.raises(InvalidRequest) as caught:
        decode_task(b'{"executors": [')
    assert caught.value.field == "body"


def test_accepted_task_is_queued_with_types_filled_and_read_only_fields_ignored() -> None:
    task = submit(
        {
            "id": "client-chosen",
            "state": "COMPLETE",
            "logs": [{"logs": [], "outputs": []}],
            "creation_time": "1999-01-01T00:00:00Z",
            "unknown": {"ignored": True},
            "executors": [EXECUTOR],
            "inputs": [{"path": "/in/a", "url": "s3://b/a"}],
            "outputs": [{"path": "/out/*.txt", "path_prefix": "/out/", "url": "s3://b/run/"}],
            "tags": {"empty": ""},
        }
    ).task
    assert (task.id, task.state, task.logs, task.creation_time) == (
        "t",
        State.QUEUED,
        None,
        "2026-01-01T00:00:00Z",
    )
    assert task.inputs[0].type is FileType.FILE
    assert task.outputs[0].type is FileType.FILE
    assert task.tags == {"empty": ""}


def test_content_wins_and_its_size_is_bounded() -> None:
    big = "x" * (1024 * 1024)
    task = submit(
        {"executors": [EXECUTOR], "inputs": [{"path": "/d/a", "content": big, "url": "s3://ignored"}]}
    ).task
    assert task.inputs[0].content == big
    with pytest.raises(InvalidTask) as caught:
        submit(
            {"executors": [EXECUTOR], "inputs": [{"path": "/d/a", "content": big}]},
            Rules(max_content_bytes=1000),
        )
    assert caught.value.field == "inputs[0].content"


def test_backend_parameters_compare_case_insensitively_and_unsupported_ones_are_dropped_with_a_warning() -> (
    None
):
    accepted = submit(
        {
            "executors": [EXECUTOR],
            "resources": {"backend_parameters": {"QUEUE": "fast", "VmSize": "big"}},
        },
        Rules(backend_parameters=frozenset({"queue"})),
    )
    assert accepted.task.resources.backend_parameters == {"QUEUE": "fast"}
    assert accepted.warnings == ["unsupported backend_parameters ignored: VmSize"]


def test_a_zero_ram_or_disk_is_no_request_as_nextflow_sends_a_disk_under_1_gib() -> None:
    accepted = submit({"executors": [EXECUTOR], "resources": {"cpu_cores": 1, "ram_gb": 0.5, "disk_gb": 0}})
    assert (accepted.task.resources.ram_gb, accepted.task.resources.disk_gb) == (0.5, None)
    assert accepted.warnings == ["resources.disk_gb = 0 taken as no request"]
    accepted = submit({"executors": [EXECUTOR], "resources": {"ram_gb": 0.0}})
    assert accepted.task.resources.ram_gb is None
    assert accepted.warnings == ["resources.ram_gb = 0 taken as no request"]
    with pytest.raises(InvalidTask) as caught:
        submit({"executors": [EXECUTOR], "resources": {"disk_gb": -0.5}})
    assert caught.value.field == "resources.disk_gb"


def test_strict_task_with_only_supported_parameters_is_accepted() -> None:
    accepted = submit(
        {
            "executors": [EXECUTOR],
            "resources": {"backend_parameters": {"Queue": "a"}, "backend_parameters_strict": True},
        },
        Rules(backend_parameters=frozenset({"queue"})),
    )
    assert accepted.warnings == []


def test_paths_beside_the_kernels_directories_and_a_file_given_and_collected_are_accepted() -> None:
    accepted = submit(
        {
            "executors": [EXECUTOR],
            "inputs": [
                {"path": "/procedures/a", "content": "x"},
                {"path": "/data/devices", "content": "x"},
                {"path": "/d/a", "content": "file"},
                {"path": "/d/ab", "content": "a sibling, not inside"},
            ],
            # The input file collected again after the executors changed it.
            "outputs": [{"path": "/d/a", "url": "s3://b/a"}, {"path": "/system/out", "url": "s3://b/o"}],
            "volumes": ["/device-scratch"],
        }
    )
    assert len(accepted.task.inputs) == 4


_SEGMENTS = st.sampled_from(["a", "b", "ab", "c"])
_PATHS = st.lists(_SEGMENTS, min_size=2, max_size=4).map(lambda parts: "/" + "/".join(parts))


@given(
    st.lists(st.tuples(_PATHS, st.sampled_from(["FILE", "DIRECTORY"])), max_size=6),
    st.lists(_PATHS, max_size=3),
)
def test_a_path_inside_a_file_is_refused_exactly_when_some_file_is_its_directory(
    inputs: list[tuple[str, str]], volumes: list[str]
) -> None:
    """The rule, checked against its plain statement: some path lies below a path that an input
    makes a FILE."""
    unique = list(dict.fromkeys(p for p, _ in inputs))
    kinds = dict(inputs)
    body = {
        "executors": [{"image": "alpine", "command": ["true"]}],
        "inputs": [
            {"path": p, "content": "x", "type": "FILE"}
            if kinds[p] == "FILE"
            else {"path": p, "url": "s3://b/k", "type": "DIRECTORY"}
            for p in unique
        ],
        "volumes": volumes,
    }
    files = [p for p in unique if kinds[p] == "FILE"]
    expected = any(q.startswith(f + "/") for q in unique + volumes for f in files)
    if expected:
        with pytest.raises(InvalidTask, match="makes a FILE"):
            submit(body)
    else:
        submit(body)
