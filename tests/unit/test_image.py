"""The Poiesis image has two recipes, deploy/image/Dockerfile (for Docker users and releases) and
scripts/real-node (built here without Docker): they must put the same things in the same places."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "deploy" / "image" / "Dockerfile").read_text()
REAL_NODE = (ROOT / "scripts" / "real-node").read_text()


@pytest.mark.parametrize(
    "fact",
    [
        pytest.param("UV_PROJECT_ENVIRONMENT=/opt/poiesis", id="the environment's place"),
        pytest.param("UV_COMPILE_BYTECODE=1", id="bytecode compiled"),
        pytest.param("uv sync --frozen --no-dev --no-editable", id="the locked dependencies, no dev ones"),
        pytest.param("/usr/local/bin/poiesis-launcher", id="the launcher's path"),
        pytest.param("--uid 10001", id="the non-root user"),
        pytest.param("deploy/launcher", id="the launcher's source"),
        pytest.param("PYTHONDONTWRITEBYTECODE=1", id="no bytecode written at run time"),
    ],
)
def test_both_recipes_say_it(fact: str) -> None:
    assert fact in DOCKERFILE
    assert fact in REAL_NODE
