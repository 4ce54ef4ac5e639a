"""API behaviour that depends on settings, in process: CORS and the body size limit; and what its
start-up leaves the collector."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from poiesis.entrypoints.api import create_app
from poiesis.entrypoints.container import ApiContainer
from poiesis.entrypoints.settings import load

ORIGIN = "https://workflows.example.org"


def client(tmp_path: Path, **settings: object) -> Iterator[TestClient]:  # type: ignore[type-arg]
    url = f"sqlite:///{tmp_path / 'p.db'}"
    app = create_app(ApiContainer(settings=load({}, database_url=url, **settings)))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


@pytest.fixture
def with_cors(tmp_path: Path) -> Iterator[TestClient]:  # type: ignore[type-arg]
    yield from client(tmp_path, cors_allow_origins=[ORIGIN])


@pytest.fixture
def without_cors(tmp_path: Path) -> Iterator[TestClient]:  # type: ignore[type-arg]
    yield from client(tmp_path)


def test_cors_allows_the_configured_origin(with_cors: TestClient) -> None:  # type: ignore[type-arg]
    preflight = with_cors.options(
        "/ga4gh/tes/v1/tasks", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code in (200, 204)
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    other = with_cors.get("/ga4gh/tes/v1/service-info", headers={"Origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in other.headers


def test_cors_is_off_by_default(without_cors: TestClient) -> None:  # type: ignore[type-arg]
    response = without_cors.get("/ga4gh/tes/v1/service-info", headers={"Origin": ORIGIN})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


def test_body_limit_is_configurable(tmp_path: Path) -> None:
    small = next(client(tmp_path, max_body_bytes=1000))
    body = b'{"executors": [{"image": "a", "command": ["x"]}], "description": "' + b"x" * 2000 + b'"}'
    response = small.post("/ga4gh/tes/v1/tasks", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["status_code"] == 413


def test_what_start_up_made_is_left_out_of_full_collections_until_the_app_stops(tmp_path: Path) -> None:
    serving = client(tmp_path)
    c = next(serving)
    assert gc.get_freeze_count() > 10_000  # the modules, settings and pools of start-up
    assert c.get("/ga4gh/tes/v1/service-info").status_code == 200
    serving.close()
    assert gc.get_freeze_count() == 0
