"""The chart's values schema carries the application's settings as they are now."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from poiesis.entrypoints import settings

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("chart_schema", ROOT / "deploy" / "helm" / "schema.py")
assert spec
assert spec.loader
schema = importlib.util.module_from_spec(spec)
spec.loader.exec_module(schema)


def test_values_schema_is_current() -> None:
    assert schema.OUT.read_text() == schema.render(), "run: uv run python deploy/helm/schema.py"


def test_every_setting_is_either_in_config_or_wired_by_the_chart() -> None:
    defs = json.loads(schema.OUT.read_text())["$defs"]
    offered = set(defs["Settings"]["properties"]) | schema.OWNED["Settings"]
    assert offered == set(settings.Settings.__struct_fields__)
    assert defs["Settings"]["additionalProperties"] is False
    assert defs["PodSettings"]["additionalProperties"] is False


def test_an_unknown_kubernetes_setting_is_refused_by_poiesis_too(tmp_path: Path) -> None:
    path = tmp_path / "poiesis.toml"
    path.write_text('[kubernetes]\nstorag_class = "fast"\n')
    with pytest.raises(settings.SettingsError, match="storag_class"):
        settings.load({"POIESIS_CONFIG": str(path)})
