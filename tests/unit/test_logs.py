"""Log configuration: Poiesis's own lines at the chosen level, chatty libraries held back."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from poiesis.entrypoints.logs import configure


@pytest.fixture(autouse=True)
def restore() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, {n: logging.getLogger(n).level for n in ("httpx", "alembic")})
    yield
    root.handlers[:], level, libraries = saved
    root.setLevel(level)
    for name, lib_level in libraries.items():
        logging.getLogger(name).setLevel(lib_level)


def test_each_http_request_of_a_library_is_not_an_info_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure("INFO", "json")
    logging.getLogger("httpx").info("HTTP Request: GET https://apiserver/api/v1/pods/x")
    logging.getLogger("poiesis.trec").info("recording task t")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["message"] for line in lines] == ["recording task t"]


def test_debug_lets_the_libraries_through(capsys: pytest.CaptureFixture[str]) -> None:
    configure("DEBUG", "text")
    logging.getLogger("httpx").debug("HTTP Request: GET https://apiserver/")
    assert "HTTP Request" in capsys.readouterr().err
