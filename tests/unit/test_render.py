"""The task volume as a claim (the default) or the node's own disk."""

from __future__ import annotations

from typing import Any

from poiesis.adapters.kubernetes.render import PodSettings, render_pod_spec
from poiesis.adapters.kubernetes.taskpod import FAILED_MARK, STATUS_DIR
from poiesis.domain.submission import NewOutput
from poiesis.domain.tes import Resources
from tests.builders import make_task
from tests.conftest import FakeClock


def volume(spec: dict[str, Any]) -> dict[str, Any]:
    return next(v for v in spec["volumes"] if v["name"] == "task-volume")


def test_the_task_volume_is_a_claim_of_disk_gb_in_the_storage_class(clock: FakeClock) -> None:
    task = make_task(clock, resources=Resources(disk_gb=25))
    spec = render_pod_spec(task, PodSettings(storage_class="fast"))
    claim = volume(spec)["ephemeral"]["volumeClaimTemplate"]["spec"]
    assert (claim["storageClassName"], claim["resources"]["requests"]["storage"]) == ("fast", "25000000000")
    assert all("ephemeral-storage" not in c["resources"]["requests"] for c in spec["containers"])


def test_the_task_volume_on_the_node_is_limited_and_requested(clock: FakeClock) -> None:
    task = make_task(clock, resources=Resources(disk_gb=25))
    spec = render_pod_spec(task, PodSettings(task_volume="empty-dir", default_disk_gb=10))
    assert volume(spec) == {"name": "task-volume", "emptyDir": {"sizeLimit": "25000000000"}}
    (main,) = spec["containers"]
    assert main["resources"]["requests"]["ephemeral-storage"] == "25000000000"
    untouched = render_pod_spec(make_task(clock), PodSettings())["containers"][0]["resources"]["requests"]
    assert "ephemeral-storage" not in untouched


def test_host_network_and_an_explicit_api_server_for_clusters_without_kube_proxy() -> None:
    settings = PodSettings(host_network=True, api_server="https://127.0.0.1:6443")
    spec = render_pod_spec(make_task(FakeClock()), settings)
    assert spec["hostNetwork"] is True
    trec = next(c for c in spec["initContainers"] if c["name"] == "trec")
    assert {"name": "POIESIS_TREC_API_SERVER", "value": "https://127.0.0.1:6443"} in trec["env"]
    assert "hostNetwork" not in render_pod_spec(make_task(FakeClock()), PodSettings())


def test_with_outputs_a_failed_executor_lets_the_pod_go_on_to_upload_them(clock: FakeClock) -> None:
    task = make_task(clock, executors=2, outputs=[NewOutput(path="/data/out", url="s3://b/out")])
    init = {c["name"]: c for c in render_pod_spec(task, PodSettings())["initContainers"]}
    for name in ("executor-0", "executor-1"):
        command = init[name]["command"]
        assert command[command.index("--failed-mark") + 1] == FAILED_MARK
        assert command.index("--failed-mark") < command.index("--")
    tof = init["tof"]
    assert tof["command"][tof["command"].index("--after-failure-mark") + 1] == FAILED_MARK
    assert {"name": "status", "mountPath": STATUS_DIR, "readOnly": True} in tof["volumeMounts"]
    # Without outputs there is nothing to deliver: a failure stops the Pod at once, as before.
    bare = render_pod_spec(make_task(clock), PodSettings())["initContainers"]
    assert all("--failed-mark" not in c["command"] for c in bare)
