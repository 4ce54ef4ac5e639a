from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poiesis.domain.lifecycle import (
    CancelRequested,
    Event,
    ExecutorExited,
    ExecutorStarted,
    Finish,
    LimitExceeded,
    OutputsUploaded,
    Preempted,
    Progress,
    ResourcesGone,
    RunExecutor,
    StageOut,
    StagingStarted,
    SystemFailure,
    apply,
    next_step,
)
from poiesis.domain.states import TERMINAL, State, can_transition
from poiesis.domain.tes import Executor

AT = "2026-01-01T00:00:00Z"


def executors(*ignore: bool) -> list[Executor]:
    return [Executor(image="a", command=["x"], ignore_error=i or None) for i in ignore]


def run(execs: list[Executor], has_outputs: bool, events: list[Event]) -> Progress:
    progress = Progress()
    for event in events:
        progress = apply(execs, has_outputs, progress, event)
    return progress


def test_a_clean_run_completes_after_outputs_are_uploaded() -> None:
    execs = executors(False, False)
    p = run(
        execs,
        True,
        [
            StagingStarted(),
            ExecutorStarted(0, AT),
            ExecutorExited(0, 0, AT),
            ExecutorStarted(1, AT),
            ExecutorExited(1, 0, AT),
        ],
    )
    assert p.state is State.RUNNING
    assert next_step(execs, True, p) == StageOut()
    assert apply(execs, True, p, OutputsUploaded()).state is State.COMPLETE


def test_first_failure_stops_the_task_with_one_log() -> None:
    execs = executors(False, False)
    p = run(execs, False, [ExecutorStarted(0, AT), ExecutorExited(0, 3, AT), ExecutorStarted(1, AT)])
    assert p.state is State.EXECUTOR_ERROR
    assert [r.exit_code for r in p.executors] == [3]


def test_ignore_error_goes_on_keeps_the_real_code_and_ends_in_executor_error() -> None:
    execs = executors(True, False)
    p = run(execs, False, [ExecutorStarted(0, AT), ExecutorExited(0, 3, AT)])
    assert next_step(execs, False, p) == RunExecutor(1)
    p = run(
        execs,
        False,
        [ExecutorStarted(0, AT), ExecutorExited(0, 3, AT), ExecutorStarted(1, AT), ExecutorExited(1, 0, AT)],
    )
    assert p.state is State.EXECUTOR_ERROR
    assert [r.exit_code for r in p.executors] == [3, 0]


@pytest.mark.parametrize(
    ("events", "state"),
    [
        pytest.param(
            [StagingStarted(), SystemFailure("input 0 not found")], State.SYSTEM_ERROR, id="staging fails"
        ),
        pytest.param([ExecutorStarted(0, AT), Preempted("node reclaimed")], State.PREEMPTED, id="preempted"),
        pytest.param(
            [ExecutorStarted(0, AT), LimitExceeded("over disk_gb"), ExecutorExited(0, 0, AT)],
            State.EXECUTOR_ERROR,
            id="a limit found as an executor ended, whatever its exit code",
        ),
        pytest.param(
            [StagingStarted(), LimitExceeded("over disk_gb")], State.INITIALIZING, id="only while running"
        ),
        pytest.param(
            [ExecutorStarted(0, AT), CancelRequested(), ResourcesGone()], State.CANCELED, id="canceled"
        ),
        pytest.param([ResourcesGone()], State.QUEUED, id="gone without cancel means nothing"),
    ],
)
def test_outcomes(events: list[Event], state: State) -> None:
    assert run(executors(False), False, events).state is state


indices = st.integers(min_value=0, max_value=3)
events = st.one_of(
    st.just(StagingStarted()),
    st.builds(ExecutorStarted, index=indices, at=st.just(AT)),
    st.builds(ExecutorExited, index=indices, exit_code=st.sampled_from([0, 0, 1, 137]), at=st.just(AT)),
    st.just(OutputsUploaded()),
    st.builds(SystemFailure, reason=st.just("boom")),
    st.builds(Preempted, reason=st.just("spot")),
    st.builds(LimitExceeded, reason=st.just("disk")),
    st.just(CancelRequested()),
    st.just(ResourcesGone()),
)


@given(
    st.lists(st.booleans(), min_size=1, max_size=4),
    st.booleans(),
    st.lists(events, max_size=40),
    st.booleans(),
)
def test_any_event_sequence_gives_a_legal_history(
    ignore: list[bool], has_outputs: bool, seq: list[Event], deliver: bool
) -> None:
    execs = executors(*ignore)
    progress = Progress(deliver_after_failure=deliver)
    for event in seq:
        after = apply(execs, has_outputs, progress, event)
        if after.state is not progress.state:
            assert can_transition(progress.state, after.state)
        if progress.state in TERMINAL:
            assert after == progress, "terminal states are absorbing"
        # Logs never outnumber executors, and each one started after the previous one ended.
        assert len(after.executors) <= len(execs)
        assert all(r.exit_code is not None for r in after.executors[:-1])
        # A failing executor without ignore_error is always the last one that ran.
        for i, r in enumerate(after.executors[:-1]):
            assert r.exit_code == 0 or execs[i].ignore_error
        progress = after
    if progress.state is State.COMPLETE:
        assert len(progress.executors) == len(execs)
        assert all(r.exit_code == 0 for r in progress.executors)
    step = next_step(execs, has_outputs, progress)
    if isinstance(step, Finish):
        assert step.state in TERMINAL


def test_a_backend_that_delivers_after_a_failure_uploads_then_ends_in_executor_error() -> None:
    execs = executors(False, False)
    start = Progress(state=State.INITIALIZING, deliver_after_failure=True)
    p = start
    for event in [ExecutorStarted(0, AT), ExecutorExited(0, 1, AT)]:
        p = apply(execs, True, p, event)
    assert next_step(execs, True, p) == StageOut(after_failure=True)
    assert p.state is State.RUNNING, "not ended before the outputs are uploaded"
    p = apply(execs, True, p, OutputsUploaded())
    assert p.state is State.EXECUTOR_ERROR
    assert [r.exit_code for r in p.executors] == [1], "the second executor never ran"
    # Without outputs, or on a backend that cannot, it ends at once.
    assert apply(
        execs, False, apply(execs, False, start, ExecutorStarted(0, AT)), ExecutorExited(0, 1, AT)
    ).state is (State.EXECUTOR_ERROR)


def test_an_upload_that_fails_after_an_executor_error_leaves_the_executors_error() -> None:
    execs = executors(False)
    p = Progress(state=State.INITIALIZING, deliver_after_failure=True)
    for event in [ExecutorStarted(0, AT), ExecutorExited(0, 2, AT), SystemFailure("output 0: 403")]:
        p = apply(execs, True, p, event)
    assert p.state is State.EXECUTOR_ERROR
    assert p.system_logs == ("after the executor error: output 0: 403",)
    # The same failure of an upload after every executor succeeded is the system's.
    ok = Progress(state=State.INITIALIZING, deliver_after_failure=True)
    for event in [ExecutorStarted(0, AT), ExecutorExited(0, 0, AT), SystemFailure("output 0: 403")]:
        ok = apply(execs, True, ok, event)
    assert ok.state is State.SYSTEM_ERROR
