from __future__ import annotations

import pytest

from poiesis.domain.errors import InvalidRequest
from poiesis.domain.listing import MAX_PAGE_SIZE, build_query, tag_filter
from poiesis.domain.states import State
from poiesis.domain.tes import View


def query(**overrides: object) -> object:
    args: dict[str, object] = {
        "owner": None,
        "name_prefix": None,
        "state": None,
        "tag_keys": [],
        "tag_values": [],
        "page_size": None,
        "page_token": None,
        "view": None,
    }
    return build_query(**(args | overrides))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("keys", "values", "expected"),
    [
        pytest.param(["foo1", "foo2"], ["bar1", "bar2"], {"foo1": "bar1", "foo2": "bar2"}, id="zipped"),
        pytest.param(["foo1"], [], {"foo1": ""}, id="key only"),
        pytest.param(
            ["foo", "lorem", "baz"],
            ["bar", "ipsum"],
            {"foo": "bar", "lorem": "ipsum", "baz": ""},
            id="shorter values pad with any",
        ),
    ],
)
def test_tag_filters_zip_like_the_spec(keys: list[str], values: list[str], expected: dict[str, str]) -> None:
    assert tag_filter(keys, values) == expected


def test_more_values_than_keys_is_rejected() -> None:
    with pytest.raises(InvalidRequest) as caught:
        tag_filter(["a"], ["1", "2"])
    assert caught.value.field == "tag_value"


def test_defaults_and_clamping() -> None:
    q = query()
    assert (q.page_size, q.view, q.state, q.name_prefix) == (256, View.MINIMAL, None, None)  # type: ignore[attr-defined]
    assert query(page_size=5000).page_size == MAX_PAGE_SIZE  # type: ignore[attr-defined]
    assert query(state="RUNNING", name_prefix="").state is State.RUNNING  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param({"page_size": 0}, "page_size", id="zero page"),
        pytest.param({"page_size": -3}, "page_size", id="negative page"),
        pytest.param({"view": "full"}, "view", id="view is case-sensitive"),
        pytest.param({"state": "DONE"}, "state", id="unknown state"),
        pytest.param({"page_token": "forged"}, "page_token", id="forged token"),
    ],
)
def test_bad_parameters_name_themselves(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        query(**overrides)
    assert caught.value.field == field
