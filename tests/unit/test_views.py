from __future__ import annotations

from typing import Any

import msgspec
import pytest
import tes
from hypothesis import given, settings
from hypothesis import strategies as st
from tes.utils import unmarshal

from poiesis.domain.states import State
from poiesis.domain.tes import (
    Executor,
    ExecutorLog,
    FileType,
    Input,
    Output,
    OutputFileLog,
    Resources,
    Task,
    TaskLog,
    View,
)
from poiesis.domain.views import render

text = st.text(max_size=8)
maybe = lambda s: st.none() | s  # noqa: E731
paths = st.from_regex(r"\A/[a-z]{1,5}(/[a-z]{1,5}){0,2}\Z")
times = st.just("2026-01-02T03:04:05.000001Z")
string_maps = maybe(st.dictionaries(st.from_regex(r"\A[a-z]{1,5}\Z"), text, max_size=3))

executors = st.builds(
    Executor,
    image=st.just("alpine"),
    command=st.lists(text, min_size=1, max_size=3),
    workdir=maybe(paths),
    stdin=maybe(paths),
    stdout=maybe(paths),
    stderr=maybe(paths),
    env=string_maps,
    ignore_error=maybe(st.booleans()),
)
inputs = st.builds(
    Input,
    path=paths,
    type=st.sampled_from(FileType),
    name=maybe(text),
    url=maybe(st.just("s3://bucket/key")),
    content=maybe(text),
    streamable=maybe(st.booleans()),
)
outputs = st.builds(
    Output, path=paths, url=st.just("s3://b/k"), type=st.sampled_from(FileType), path_prefix=maybe(paths)
)
executor_logs = st.builds(
    ExecutorLog,
    exit_code=st.integers(min_value=-(2**31), max_value=2**31 - 1),
    start_time=maybe(times),
    end_time=maybe(times),
    stdout=maybe(text),
    stderr=maybe(text),
)
task_logs = st.builds(
    TaskLog,
    logs=st.lists(executor_logs, max_size=3),
    outputs=st.lists(
        st.builds(OutputFileLog, url=st.just("s3://b/k"), path=paths, size_bytes=st.just("12")), max_size=2
    ),
    metadata=string_maps,
    start_time=maybe(times),
    end_time=maybe(times),
    system_logs=maybe(st.lists(text, min_size=1, max_size=2)),
)
resources = st.builds(
    Resources,
    cpu_cores=maybe(st.integers(1, 64)),
    preemptible=maybe(st.booleans()),
    ram_gb=maybe(st.floats(0.1, 512)),
    disk_gb=maybe(st.floats(0.1, 512)),
    zones=maybe(st.lists(text, max_size=2)),
    backend_parameters=string_maps,
)
tasks = st.builds(
    Task,
    id=st.just("01arz3ndektsv4rrffq69g5fav"),
    state=st.sampled_from([s for s in State if s is not State.UNKNOWN]),
    executors=st.lists(executors, min_size=1, max_size=3),
    creation_time=times,
    name=maybe(text),
    description=maybe(text),
    inputs=maybe(st.lists(inputs, min_size=1, max_size=3)),
    outputs=maybe(st.lists(outputs, min_size=1, max_size=2)),
    resources=maybe(resources),
    volumes=maybe(st.lists(paths, max_size=2)),
    tags=string_maps,
    logs=maybe(st.lists(task_logs, min_size=1, max_size=2)),
)


def _nulls(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, dict):
        return any(_nulls(v) for v in value.values())
    if isinstance(value, list):
        return any(_nulls(v) for v in value)
    return False


@settings(max_examples=150)
@given(tasks, st.sampled_from(View))
def test_every_view_of_any_task_parses_with_py_tes_and_has_no_nulls(task: Task, view: View) -> None:
    wire = msgspec.json.encode(render(task, view))
    decoded = msgspec.json.decode(wire)
    assert not _nulls(decoded)
    parsed = unmarshal(decoded, tes.Task)
    assert parsed.id == task.id
    assert parsed.state == task.state


@given(tasks)
def test_minimal_is_only_id_and_state(task: Task) -> None:
    assert msgspec.to_builtins(render(task, View.MINIMAL)) == {"id": task.id, "state": task.state.value}


@given(tasks)
def test_basic_leaves_out_exactly_what_the_spec_says(task: Task) -> None:
    basic = msgspec.to_builtins(render(task, View.BASIC))
    full = msgspec.to_builtins(render(task, View.FULL))
    assert all("content" not in i for i in basic.get("inputs", []))
    for log in basic.get("logs", []):
        assert "system_logs" not in log
        assert all("stdout" not in e and "stderr" not in e for e in log["logs"])
    # Nothing else is removed: stripping the same keys from FULL gives BASIC.
    for i in full.get("inputs", []):
        i.pop("content", None)
    for log in full.get("logs", []):
        log.pop("system_logs", None)
        for e in log["logs"]:
            e.pop("stdout", None)
            e.pop("stderr", None)
    assert basic == full


@pytest.mark.parametrize("view", list(View))
def test_type_is_always_rendered_for_inputs_and_outputs(view: View) -> None:
    task = Task(
        id="x",
        state=State.QUEUED,
        executors=[Executor(image="a", command=["b"])],
        creation_time="2026-01-01T00:00:00Z",
        inputs=[Input(path="/a", type=FileType.FILE, content="c")],
        outputs=[Output(path="/b", url="s3://b/k", type=FileType.DIRECTORY)],
    )
    rendered = msgspec.to_builtins(render(task, view))
    if view is not View.MINIMAL:
        assert rendered["inputs"][0]["type"] == "FILE"
        assert rendered["outputs"][0]["type"] == "DIRECTORY"


def test_the_owner_is_shown_in_full_only_and_never_as_a_field_of_its_own() -> None:
    base = Task(
        id="t",
        state=State.QUEUED,
        executors=[Executor(image="alpine", command=["true"])],
        creation_time="2026-01-02T03:04:05Z",
        owner="alice",
    )
    full = render(base, View.FULL)
    assert isinstance(full, Task)
    assert full.owner is None
    assert full.logs == [TaskLog(logs=[], outputs=[], metadata={"owner": "alice"})]
    logged = msgspec.structs.replace(base, logs=[TaskLog(logs=[], outputs=[], metadata={"node": "n1"})])
    assert render(logged, View.FULL).logs[0].metadata == {"node": "n1", "owner": "alice"}  # type: ignore[union-attr]
    basic = render(base, View.BASIC)
    assert "owner" not in msgspec.json.decode(msgspec.json.encode(basic))
    unmarshal(msgspec.json.decode(msgspec.json.encode(full)), tes.Task)  # py-tes accepts it
