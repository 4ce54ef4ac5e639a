from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poiesis.domain.errors import InvalidRequest
from poiesis.domain.identity import decode_page_token, encode_page_token, is_task_id, new_task_id

T0 = datetime(2026, 5, 1, tzinfo=UTC)


@given(st.integers(min_value=1, max_value=10**9))
def test_ids_are_url_safe_and_ordered_by_creation_time(ms: int) -> None:
    earlier = new_task_id(T0)
    later = new_task_id(T0 + timedelta(milliseconds=ms))
    assert earlier < later
    for task_id in (earlier, later):
        assert is_task_id(task_id)
        assert ":" not in task_id
        assert "/" not in task_id
        assert task_id == task_id.lower()


def test_page_tokens_round_trip() -> None:
    task_id = new_task_id(T0)
    token = encode_page_token(task_id)
    assert task_id not in token
    assert decode_page_token(token) == task_id


@pytest.mark.parametrize("token", ["", "garbage", "!!!", encode_page_token("not-an-id")[:-2] + "zz"])
def test_forged_page_tokens_are_rejected_naming_the_parameter(token: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        decode_page_token(token)
    assert caught.value.field == "page_token"


def test_a_task_id_is_the_whole_value() -> None:
    valid = "01arz3ndektsv4rrffq69g5fav"
    assert is_task_id(valid)
    for hostile in (valid + "\n", valid + "\x00", "\n" + valid, valid.upper(), valid[:-1]):
        assert not is_task_id(hostile), repr(hostile)
