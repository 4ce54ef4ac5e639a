from __future__ import annotations

import logging

import pytest

from poiesis.entrypoints.edge import RefusalLog


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_client_and_status_per_interval_then_a_count_of_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    refusals = RefusalLog(every=10, clock=clock)
    with caplog.at_level(logging.WARNING, logger="poiesis.edge"):
        logged = [refusals.refused(401, "10.0.0.7", "POST", "/tasks", "wrong password") for _ in range(5)]
        assert refusals.refused(403, "10.0.0.7", "POST", "/tasks", "cross-origin")
        assert refusals.refused(401, "10.0.0.8", "GET", "/tasks", "no credentials")
        clock.now = 10.5
        assert refusals.refused(401, "10.0.0.7", "POST", "/tasks", "wrong password")
    assert logged == [True, False, False, False, False]
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "refused 401 POST /tasks from 10.0.0.7: wrong password"
    assert len(messages) == 4
    assert messages[-1].endswith("(and 4 more since the last line)")


def test_memory_is_bounded_by_the_number_of_clients_remembered() -> None:
    clock = FakeClock()
    refusals = RefusalLog(every=10, clients=3, clock=clock)
    for i in range(100):
        refusals.refused(401, f"10.0.0.{i}", "GET", "/", "x")
    assert len(refusals._seen) == 3
    # The oldest was forgotten: it is logged again at once.
    assert refusals.refused(401, "10.0.0.0", "GET", "/", "x")


def test_a_long_reason_or_path_is_cut(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="poiesis.edge"):
        RefusalLog().refused(400, "::1", "GET", "/" + "p" * 5000, "h" * 5000)
    assert len(caplog.records[0].getMessage()) < 500
