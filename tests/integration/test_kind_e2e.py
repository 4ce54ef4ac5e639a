"""The chart on kind (scripts/kind-e2e), where a Docker engine answers; skipped elsewhere."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "kind-e2e"


def docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


@pytest.mark.skipif(not docker_answers(), reason="no Docker engine here: kind needs one (scripts/kind-e2e)")
def test_the_chart_installs_on_kind_and_helm_test_passes() -> None:
    result = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=3600, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "helm test passed" in result.stderr
