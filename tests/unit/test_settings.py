from __future__ import annotations

from pathlib import Path

import pytest

from poiesis.entrypoints.settings import SettingsError, load


def test_environment_overrides_file_and_defaults(tmp_path: Path) -> None:
    config = tmp_path / "poiesis.toml"
    config.write_text('port = 9000\nstorage = ["s3://a/"]\nservice_name = "From file"\n')
    settings = load(
        {
            "POIESIS_CONFIG": str(config),
            "POIESIS_PORT": "9100",
            "POIESIS_BACKEND_PARAMETERS": "Queue, VmSize",
            "POIESIS_MIGRATE_ON_START": "false",
        }
    )
    assert settings.port == 9100
    assert settings.storage == ["s3://a/"]
    assert settings.service_name == "From file"
    assert settings.backend_parameters == ["Queue", "VmSize"]
    assert settings.migrate_on_start is False
    assert settings.host == "127.0.0.1"


def test_flags_win_over_environment() -> None:
    assert load({"POIESIS_PORT": "9100"}, port=9200).port == 9200


@pytest.mark.parametrize(
    ("environ", "needle"),
    [
        pytest.param({"POIESIS_PORT": "eighty"}, "port", id="not a number"),
        pytest.param({"POIESIS_BACKEND": "slurm"}, "backend", id="unknown backend"),
        pytest.param({"POIESIS_CONFIG": "/nonexistent/poiesis.toml"}, "POIESIS_CONFIG", id="missing file"),
    ],
)
def test_bad_settings_say_which(environ: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError, match=needle):
        load(environ)


def test_unknown_keys_in_the_file_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "poiesis.toml"
    config.write_text("prot = 9000\n")
    with pytest.raises(SettingsError, match="prot"):
        load({"POIESIS_CONFIG": str(config)})
