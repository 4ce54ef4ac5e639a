from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poiesis.domain.states import TERMINAL, TRANSITIONS, State, allowed_sources, can_transition

ORDER = [State.QUEUED, State.INITIALIZING, State.RUNNING]


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_terminal_states_are_absorbing(terminal: State) -> None:
    assert TRANSITIONS[terminal] == frozenset()


def test_canceling_only_ends_in_canceled() -> None:
    assert TRANSITIONS[State.CANCELING] == {State.CANCELED}
    assert allowed_sources(State.CANCELED) == {State.CANCELING}


@pytest.mark.parametrize(
    ("source", "target", "allowed"),
    [
        pytest.param(State.QUEUED, State.INITIALIZING, True, id="staging starts"),
        pytest.param(State.QUEUED, State.RUNNING, True, id="a missed INITIALIZING is skipped"),
        pytest.param(State.RUNNING, State.INITIALIZING, False, id="never backwards"),
        pytest.param(State.RUNNING, State.RUNNING, False, id="no self transition"),
        pytest.param(State.QUEUED, State.CANCELED, False, id="cancel goes through CANCELING"),
        pytest.param(State.INITIALIZING, State.PREEMPTED, True, id="preemption"),
        pytest.param(State.COMPLETE, State.SYSTEM_ERROR, False, id="terminal is final"),
        pytest.param(State.UNKNOWN, State.QUEUED, False, id="UNKNOWN is never a stored state"),
    ],
)
def test_transition_table(source: State, target: State, allowed: bool) -> None:
    assert can_transition(source, target) is allowed


@given(st.lists(st.sampled_from(list(State)), max_size=30))
def test_no_sequence_of_requests_leaves_a_terminal_state_or_goes_back(requests: list[State]) -> None:
    state = State.QUEUED
    history = [state]
    for target in requests:
        if can_transition(state, target):
            state = target
            history.append(state)
    for before, after in itertools.pairwise(history):
        assert before not in TERMINAL
        if before in ORDER and after in ORDER:
            assert ORDER.index(after) > ORDER.index(before)
    assert sum(s in TERMINAL for s in history) <= 1
