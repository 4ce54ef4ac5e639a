from __future__ import annotations

import pytest

from poiesis.domain.errors import Forbidden
from poiesis.domain.principal import ANONYMOUS, Principal, listing_owner, owner_scope

ALICE = Principal(name="alice")
ADMIN = Principal(name="root", admin=True)


def test_a_user_is_confined_to_their_own_tasks_and_an_admin_is_not() -> None:
    assert owner_scope(ALICE) == "alice"
    assert owner_scope(ADMIN) is None
    assert owner_scope(ANONYMOUS) is None  # authentication off: one user sees everything


@pytest.mark.parametrize(
    ("principal", "requested", "expected"),
    [
        pytest.param(ALICE, None, "alice", id="user, no filter"),
        pytest.param(ALICE, "alice", "alice", id="user, own name"),
        pytest.param(ADMIN, None, None, id="admin, everyone"),
        pytest.param(ADMIN, "bob", "bob", id="admin, one owner"),
        pytest.param(ADMIN, "", None, id="admin, empty filter"),
    ],
)
def test_listing_owner(principal: Principal, requested: str | None, expected: str | None) -> None:
    assert listing_owner(principal, requested) == expected


def test_a_user_asking_for_another_owners_tasks_is_refused() -> None:
    with pytest.raises(Forbidden):
        listing_owner(ALICE, "bob")
