"""backend_parameters an operator maps (GPUs, node labels, priority classes, Kueue queues): the
mapping's own checks, a task's values at the door, and what they become on the Pod."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from poiesis.adapters.kubernetes.render import PodSettings, render_job, render_pod_spec
from poiesis.domain.errors import InvalidRequest
from poiesis.domain.parameters import Parameter, mapping_problems, placement
from poiesis.domain.submission import Rules, accept
from poiesis.domain.tes import Resources
from poiesis.entrypoints import settings as settings_module
from poiesis.services.tasks import decode_task
from tests.builders import make_task
from tests.conftest import FakeClock

MAPPING = {
    "gpu": Parameter(to="resource", name="example.com/gpu", max=4),
    "gpu_type": Parameter(to="node_label", name="example.com/gpu.product", values=["a100", "v100"]),
    "priority": Parameter(to="priority_class", values=["tes-low", "tes-high"]),
    "queue": Parameter(to="kueue_queue", values=["gpu", "cpu"]),
}
RULES = Rules(backend_parameters=frozenset(MAPPING), parameters=MAPPING)


def submit(params: dict[str, str], strict: bool | None = None) -> Any:
    resources: dict[str, Any] = {"backend_parameters": params}
    if strict is not None:
        resources["backend_parameters_strict"] = strict
    body = {"executors": [{"image": "alpine", "command": ["true"]}], "resources": resources}
    return accept(
        decode_task(msgspec.json.encode(body)), task_id="t", creation_time="2026-01-01T00:00:00Z", rules=RULES
    )


@pytest.mark.parametrize(
    ("params", "strict", "field", "says"),
    [
        ({"gpu": "two"}, None, "gpu", "whole number of example.com/gpu"),
        ({"GPU": "0"}, None, "GPU", "whole number"),
        ({"gpu": "-1"}, True, "gpu", "whole number"),
        ({"gpu": "1.5"}, None, "gpu", "whole number"),
        ({"gpu": "5"}, True, "gpu", "at most 4"),
        ({"gpu_type": "h100"}, True, "gpu_type", "'h100' is not one of a100, v100"),
        ({"priority": "system-node-critical"}, True, "priority", "not one of tes-low, tes-high"),
        ({"queue": "someone-elses"}, True, "queue", "not one of gpu, cpu"),
        ({"gpu": "1\x00"}, None, "gpu", ""),
    ],
)
def test_a_value_that_cannot_be_honoured_is_a_400_naming_the_key(
    params: dict[str, str], strict: bool | None, field: str, says: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        submit(params, strict)
    assert caught.value.field == f"resources.backend_parameters.{field}"
    assert says in str(caught.value)


def test_without_strict_an_unhonoured_value_is_dropped_with_a_line_and_the_rest_kept() -> None:
    accepted = submit({"GPU": "8", "gpu_type": "a100", "priority": "root", "Queue": "gpu"})
    assert accepted.task.resources.backend_parameters == {"gpu_type": "a100", "Queue": "gpu"}
    assert sorted(accepted.warnings) == [
        "backend_parameters GPU ignored: asks for 8 example.com/gpu; at most 4 may be asked for",
        "backend_parameters priority ignored: 'root' is not one of tes-low, tes-high",
    ]


def test_honoured_values_become_the_executors_limits_a_node_selector_a_priority_and_a_queue() -> None:
    pod = PodSettings(backend_parameters=MAPPING, kueue_queue="default", node_selector={"pool": "gpu"})
    accepted = submit({"Gpu": "2", "gpu_type": "v100", "priority": "tes-high", "queue": "gpu"})
    task = msgspec.structs.replace(make_task(FakeClock(), executors=2), resources=accepted.task.resources)
    spec = render_pod_spec(task, pod)
    executors = [c for c in spec["initContainers"] if c["name"].startswith("executor-")]
    assert len(executors) == 2
    for c in executors:
        assert c["resources"]["limits"]["example.com/gpu"] == "2"
        assert c["resources"]["requests"]["example.com/gpu"] == "2"
    others = [c for c in spec["initContainers"] + spec["containers"] if not c["name"].startswith("executor-")]
    assert all("example.com/gpu" not in str(c.get("resources")) for c in others), "only executors hold it"
    assert spec["nodeSelector"] == {"pool": "gpu", "example.com/gpu.product": "v100"}
    assert spec["priorityClassName"] == "tes-high"
    assert render_job(task, pod)["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu"
    # A task without them keeps the operator's defaults.
    plain = render_job(make_task(FakeClock()), pod)
    assert plain["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "default"
    assert plain["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "gpu"}


def test_an_extended_resource_is_a_limit_even_when_limits_are_off() -> None:
    pod = PodSettings(backend_parameters={"gpu": MAPPING["gpu"]}, limits=False)
    resources = Resources(cpu_cores=2, backend_parameters={"gpu": "1"})
    spec = render_pod_spec(msgspec.structs.replace(make_task(FakeClock()), resources=resources), pod)
    executor = next(c for c in spec["initContainers"] if c["name"] == "executor-0")
    assert executor["resources"] == {
        "requests": {"cpu": "2", "example.com/gpu": "1"},
        "limits": {"example.com/gpu": "1"},
    }


def test_placement_ignores_what_the_mapping_does_not_honour() -> None:
    placed = placement({"gpu": "9", "other": "x", "gpu_type": "a100"}, MAPPING)
    assert placed.resources == {}
    assert placed.node_labels == {"example.com/gpu.product": "a100"}


@pytest.mark.parametrize(
    ("mapping", "says"),
    [
        ({"gpu": Parameter(to="resource", name="example.com/gpu")}, "`max`"),
        ({"gpu": Parameter(to="resource", max=2)}, "`name`"),
        ({"gpu": Parameter(to="resource", name="bad name!", max=2)}, "`name`"),
        ({"t": Parameter(to="node_label", name="zone")}, "`values`"),
        ({"p": Parameter(to="priority_class", name="x", values=["a"])}, "no meaning"),
        ({"p": Parameter(to="priority_class", values=["a"], max=3)}, "resources only"),
        (
            {
                "a": Parameter(to="resource", name="x.io/gpu", max=1),
                "b": Parameter(to="resource", name="x.io/gpu", max=2),
            },
            "already mapped from a",
        ),
    ],
)
def test_a_mapping_that_cannot_work_is_refused_naming_its_key(
    mapping: dict[str, Parameter], says: str
) -> None:
    problems = mapping_problems(mapping)
    assert any(says in p for p in problems), problems


def test_the_settings_file_maps_keys_and_refuses_what_cannot_work(tmp_path: Any) -> None:
    path = tmp_path / "poiesis.toml"
    path.write_text(
        'backend = "kubernetes"\n[kubernetes]\nkueue_queue = "default"\nnode_selector = {pool = "gpu"}\n'
        '[kubernetes.backend_parameters.gpu]\nto = "resource"\nname = "nvidia.com/gpu"\nmax = 8\n'
        '[kubernetes.backend_parameters.queue]\nto = "kueue_queue"\nvalues = ["gpu"]\n'
    )
    loaded = settings_module.load({"POIESIS_CONFIG": str(path)})
    assert loaded.kubernetes.parameters["gpu"].name == "nvidia.com/gpu"
    for bad, says in [
        (
            '[kubernetes.backend_parameters.pool]\nto = "node_label"\nname = "pool"\nvalues = ["x"]\n',
            "node_selector",
        ),
        ('[kubernetes.backend_parameters.GPU]\nto = "priority_class"\nvalues = ["x"]\n', "case"),
        ('[kubernetes.backend_parameters.gpu2]\nto = "gpus"\n', "to"),
    ]:
        path.write_text(path.read_text() + bad)
        with pytest.raises(settings_module.SettingsError, match=says):
            settings_module.load({"POIESIS_CONFIG": str(path)})
        path.write_text(path.read_text()[: -len(bad)])
    path.write_text(
        'backend = "kubernetes"\n[kubernetes.backend_parameters.queue]\n'
        'to = "kueue_queue"\nvalues = ["gpu"]\n'
    )
    with pytest.raises(settings_module.SettingsError, match="kueue_queue"):
        settings_module.load({"POIESIS_CONFIG": str(path)})


def test_service_info_lists_the_keys_and_what_each_becomes_and_the_door_checks_them() -> None:
    from types import SimpleNamespace

    from poiesis.entrypoints.container import _rules, _service_info

    loaded = settings_module.load(
        {},
        backend="kubernetes",
        backend_parameters=["Site"],
        kubernetes=PodSettings(backend_parameters={"gpu": MAPPING["gpu"]}),
    )
    info = msgspec.json.decode(msgspec.json.encode(_service_info(loaded, SimpleNamespace(name="kubernetes"))))
    assert info["tesResources_backend_parameters"] == ["Site", "gpu"]
    assert info["poiesis_backend_parameters"] == {
        "gpu": {"to": "resource", "name": "example.com/gpu", "max": 4}
    }
    rules = _rules(loaded)
    assert rules.backend_parameters == {"site", "gpu"}
    assert rules.parameters["gpu"].max == 4
    # Embedded mode gives no GPU: the key is not supported there (dropped with a line, or refused).
    local = settings_module.load(
        {}, backend="local", kubernetes=PodSettings(backend_parameters={"gpu": MAPPING["gpu"]})
    )
    assert "gpu" not in _rules(local).backend_parameters


def test_pull_secrets_are_the_operators_and_the_owners_own_and_no_one_elses() -> None:
    pod = PodSettings(
        image_pull_secrets=["site-registry"],
        owner_image_pull_secrets={"basic:alice": ["lab-a", "site-registry"]},
        executor_image_pull_policy="Always",
    )
    task = make_task(FakeClock())
    alice = render_pod_spec(msgspec.structs.replace(task, owner="basic:alice"), pod)
    bob = render_pod_spec(msgspec.structs.replace(task, owner="basic:bob"), pod)
    assert alice["imagePullSecrets"] == [{"name": "site-registry"}, {"name": "lab-a"}]
    assert bob["imagePullSecrets"] == [{"name": "site-registry"}]
    assert render_pod_spec(task, PodSettings()).get("imagePullSecrets") is None
    executor = next(c for c in alice["initContainers"] if c["name"] == "executor-0")
    assert executor["imagePullPolicy"] == "Always"
    trec = next(c for c in alice["initContainers"] if c["name"] == "trec")
    assert trec["imagePullPolicy"] == "IfNotPresent"
