"""The securityContexts of a task Pod in both modes (the real node shows what they do)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from poiesis.adapters.kubernetes.render import PodSettings, render_pod_spec
from poiesis.adapters.kubernetes.security import DEFAULT_CAPABILITIES
from poiesis.domain.tes import FileType, Input, Output
from tests.builders import make_task
from tests.conftest import FakeClock

POIESIS = ("trec", "setup", "tif", "tof", "done")


def containers(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in spec["initContainers"] + spec["containers"]}


def spec_of(**settings: Any) -> dict[str, Any]:
    task = make_task(
        FakeClock(),
        executors=2,
        inputs=[Input(path="/data/in", type=FileType.FILE, content="x")],
        outputs=[Output(path="/data/out", type=FileType.FILE, url="s3://b/out")],
    )
    return render_pod_spec(task, msgspec.convert(settings, PodSettings))


@pytest.mark.parametrize("mode", ["default", "restricted"])
def test_poiesis_containers_are_restricted_in_both_modes(mode: str) -> None:
    found = containers(spec_of(executor_security=mode))
    for name in POIESIS:
        context = found[name]["securityContext"]
        assert context == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }, name


def test_default_executors_keep_only_the_documented_capabilities_and_cannot_escalate() -> None:
    spec = spec_of()
    for name in ("executor-0", "executor-1"):
        context = containers(spec)[name]["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert context["capabilities"] == {"drop": ["ALL"], "add": list(DEFAULT_CAPABILITIES)}
        assert "runAsNonRoot" not in context
        assert "runAsUser" not in context
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "runAsNonRoot" not in spec["securityContext"]
    assert "hostUsers" not in spec


def test_restricted_executors_are_non_root_with_nothing_added() -> None:
    spec = spec_of(executor_security="restricted", executor_user=2000, executor_group=3000, fs_group=4000)
    context = containers(spec)["executor-1"]["securityContext"]
    assert context == {
        "allowPrivilegeEscalation": False,
        "seccompProfile": {"type": "RuntimeDefault"},
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": 2000,
        "runAsGroup": 3000,
    }
    assert spec["securityContext"] == {
        "seccompProfile": {"type": "RuntimeDefault"},
        "fsGroup": 4000,
        "fsGroupChangePolicy": "OnRootMismatch",
        "runAsNonRoot": True,
    }


def test_restricted_without_a_user_leaves_the_images_own_user_for_the_kubelet_to_check() -> None:
    context = containers(spec_of(executor_security="restricted"))["executor-0"]["securityContext"]
    assert context["runAsNonRoot"] is True
    assert "runAsUser" not in context


def test_an_operators_capability_set_replaces_the_default() -> None:
    context = containers(spec_of(executor_capabilities=["CHOWN"]))["executor-0"]["securityContext"]
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    nothing = containers(spec_of(executor_capabilities=[]))["executor-0"]["securityContext"]
    assert nothing["capabilities"] == {"drop": ["ALL"]}


def test_user_namespaces_are_an_opt_in() -> None:
    assert spec_of(user_namespaces=True)["hostUsers"] is False


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        pytest.param({"executor_capabilities": ["CAP_CHOWN"]}, "executor_capabilities", id="cap-prefix"),
        pytest.param({"executor_capabilities": ["ALL"]}, "executor_capabilities", id="all"),
        pytest.param({"executor_capabilities": ["chown"]}, "executor_capabilities", id="lower-case"),
        pytest.param({"executor_security": "restricted", "executor_user": 0}, "executor_user", id="root"),
        pytest.param({"poiesis_user": 0}, "poiesis_user", id="poiesis-root"),
        pytest.param({"fs_group": -1}, "fs_group", id="negative-group"),
        pytest.param({"executor_security": "privileged"}, "executor_security", id="unknown-mode"),
    ],
)
def test_settings_that_cannot_be_honoured_are_refused_naming_the_setting(
    settings: dict[str, Any], named: str
) -> None:
    with pytest.raises(msgspec.ValidationError, match=named):
        msgspec.convert(settings, PodSettings)
