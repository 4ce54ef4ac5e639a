"""The chart (deploy/helm/poiesis) through the helm binary that scripts/test-cluster builds."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "poiesis"


def binary() -> str:
    path = subprocess.run(
        [str(ROOT / "scripts" / "test-cluster"), "helm"], check=True, capture_output=True, text=True
    ).stdout.strip()
    if not Path(path).exists():
        pytest.skip(f"no helm at {path}: `scripts/test-cluster build` builds it")
    return path


def helm(
    *args: str, values: dict[str, Any] | None = None, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run helm; `values` are given as a values file."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        extra: list[str] = []
        if values is not None:
            yaml.safe_dump(values, f)
            f.flush()
            extra = ["-f", f.name]
        result = subprocess.run([binary(), *args, *extra], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def render(values: dict[str, Any], release: str = "rel", namespace: str = "poiesis") -> list[dict[str, Any]]:
    """The objects `helm install` would create, hooks and tests included."""
    out = helm("template", release, str(CHART), "-n", namespace, values=values).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]
