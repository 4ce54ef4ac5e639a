"""The TES task states and the one table of transitions every writer obeys.

The API, the Task Recorder, the Task Controller and the local backend race by design. Each of them
asks the store for a guarded transition, and the store consults `allowed_sources` so that no writer,
whatever it observed, can take a task out of a terminal state or back to an earlier one.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    UNKNOWN = "UNKNOWN"
    QUEUED = "QUEUED"
    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETE = "COMPLETE"
    EXECUTOR_ERROR = "EXECUTOR_ERROR"
    SYSTEM_ERROR = "SYSTEM_ERROR"
    CANCELED = "CANCELED"
    PREEMPTED = "PREEMPTED"
    CANCELING = "CANCELING"


TERMINAL: frozenset[State] = frozenset(
    {
        State.COMPLETE,
        State.EXECUTOR_ERROR,
        State.SYSTEM_ERROR,
        State.CANCELED,
        State.PREEMPTED,
    }
)

# The states a task moves through while it makes progress, in order. A writer may skip ahead
# (a level-triggered observer can miss INITIALIZING entirely) but never go back.
_PROGRESS: tuple[State, ...] = (State.QUEUED, State.INITIALIZING, State.RUNNING)

# Endings any active (progressing) task may reach. CANCELED is not among them: a cancel first
# goes through CANCELING, and only the removal of the task's resources completes it.
_ENDINGS: frozenset[State] = frozenset(
    {
        State.COMPLETE,
        State.EXECUTOR_ERROR,
        State.SYSTEM_ERROR,
        State.PREEMPTED,
        State.CANCELING,
    }
)


def _build_table() -> dict[State, frozenset[State]]:
    table: dict[State, set[State]] = {state: set() for state in State}
    for i, source in enumerate(_PROGRESS):
        table[source].update(_PROGRESS[i + 1 :])
        table[source].update(_ENDINGS)
    table[State.CANCELING].add(State.CANCELED)
    return {source: frozenset(targets) for source, targets in table.items()}


TRANSITIONS: dict[State, frozenset[State]] = _build_table()
"""For each state, the states a task may move to from it. Terminal states map to nothing."""


def can_transition(source: State, target: State) -> bool:
    return target in TRANSITIONS[source]


def allowed_sources(target: State) -> frozenset[State]:
    """The states from which `target` may be reached: the guard of an `UPDATE ... WHERE state IN`."""
    return frozenset(source for source, targets in TRANSITIONS.items() if target in targets)


def is_terminal(state: State) -> bool:
    return state in TERMINAL
