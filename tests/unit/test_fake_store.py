"""The TaskStore contract (tests/contracts/store.py) run against the in-memory FakeTaskStore, so unit
tests that use it hold against the real stores as far as the contract goes."""

from __future__ import annotations

import pytest

from tests.contracts.store import *  # noqa: F403 - the contract's tests, collected here
from tests.support.fake_store import FakeTaskStore


@pytest.fixture
def store() -> FakeTaskStore:
    return FakeTaskStore()
