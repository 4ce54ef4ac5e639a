"""The `poiesis` command as an operator runs it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest


def poiesis(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "poiesis.entrypoints.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_migrate_builds_the_schema_and_is_idempotent(tmp_path: Path) -> None:
    db = tmp_path / "poiesis.db"
    for _ in range(2):
        result = poiesis("migrate", "--database-url", f"sqlite:///{db}")
        assert result.returncode == 0, result.stderr
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        revision = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    assert {
        "task",
        "executor",
        "input",
        "output",
        "tag",
        "task_log",
        "executor_log",
        "system_log",
        "output_file_log",
        "state_transition",
        "task_state_count",
    } <= tables
    assert revision == [(head_revision(),)]


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    from poiesis.adapters.sqlalchemy.engine import alembic_config

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["serve", "--port", "x"], "invalid int value", id="bad flag"),
        pytest.param(["frobnicate"], "invalid choice", id="unknown command"),
    ],
)
def test_bad_invocations_fail_with_a_message(args: list[str], message: str) -> None:
    result = poiesis(*args)
    assert result.returncode == 2
    assert message in result.stderr


def test_a_bad_setting_is_reported_not_a_traceback(tmp_path: Path) -> None:
    import os

    result = poiesis("migrate", env=os.environ | {"POIESIS_BACKEND": "slurm"})
    assert result.returncode == 2
    assert "backend" in result.stderr
    assert "Traceback" not in result.stderr
