"""The Helm chart as rendered: lint, its values schema, the objects valid for Kubernetes 1.29 and 1.33
(the release's OpenAPI document, strictly) and for the test cluster's real apiserver (server-side
dry run, Pod Security admission enforcing `restricted` on the release namespace), and the settings
file it writes read back by Poiesis itself. The chart installed on a real node: tests/integration/
realnode/test_helm.py."""

from __future__ import annotations

import copy
import ipaddress
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from poiesis.entrypoints import settings
from tests.support.cluster import binaries_dir
from tests.support.helm import CHART, helm, render
from tests.support.kubeschema import KubeSchema

# Rendered without a cluster, the chart cannot look up the apiserver's addresses: they are given.
APISERVER = {"cidrs": ["10.0.0.5/32"], "ports": [6443]}
MINIMAL: dict[str, Any] = {
    "database": {"url": "postgresql://poiesis:secret@db.example.org:5432/poiesis"},
    "config": {"allow_anonymous": True},
    "networkPolicy": {
        "tasks": {"apiServer": APISERVER, "database": {"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}]}}
    },
}
PRODUCTION: dict[str, Any] = {
    "image": {"tag": "0.1.0", "pullPolicy": "Always"},
    "imagePullSecrets": ["registry"],
    "database": {"existingSecret": "tes-db-app", "existingSecretKey": "uri"},
    "tasks": {
        "namespace": "tes-tasks",
        "databaseSecret": "tes-db-url",
        "storage": {"existingSecret": "tes-storage"},
    },
    "config": {
        "auth": ["oidc", "basic"],
        "oidc": [
            {
                "issuer": "https://login.example.org/realms/research",
                "audience": ["poiesis"],
                "principal_claim": "preferred_username",
                "admin_values": ["tes-admins"],
            }
        ],
        "basic_admins": ["ops"],
        "storage": ["s3://results/"],
        "service_name": "Research TES",
        "max_executors": 50,
        "kubernetes": {
            "storage_class": "fast",
            "node_selector": {"pool": "tasks"},
            "tolerations": [{"key": "tasks", "operator": "Exists", "effect": "NoSchedule"}],
            "kueue_queue": "tes",
            "ttl_seconds_after_finished": 600,
        },
        "tctl": {"start_timeout_seconds": 300, "workers": 16},
    },
    "basicUsers": {"existingSecret": "tes-users"},
    "api": {
        "replicas": 3,
        "resources": {"requests": {"cpu": "1", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
        "nodeSelector": {"pool": "system"},
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "16m"},
            "hosts": [{"host": "tes.example.org", "paths": [{"path": "/", "pathType": "Prefix"}]}],
            "tls": [{"secretName": "tes-tls", "hosts": ["tes.example.org"]}],
        },
    },
    "tctl": {"replicas": 3, "nodeSelector": {"pool": "system"}},
    "tests": {"authSecret": "tes-test-credentials"},
    "networkPolicy": {
        "tasks": {
            "apiServer": APISERVER,
            # A CloudNativePG cluster in its own namespace.
            "database": {
                "to": [
                    {
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "databases"}},
                        "podSelector": {"matchLabels": {"cnpg.io/cluster": "tes-db"}},
                    }
                ]
            },
            "storage": [
                {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": 9000, "protocol": "TCP"}]}
            ],
            "publicEgress": {"enabled": True, "except": ["203.0.113.0/24", "2001:db8::/32"]},
        },
        "api": {
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
        },
        "metrics": {
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
        },
    },
}
TRY_OUT: dict[str, Any] = {
    "postgresql": {"enabled": True},
    "networkPolicy": {"tasks": {"apiServer": APISERVER}},
    "config": {"allow_anonymous": True, "kubernetes": {"task_volume": "empty-dir"}},
}
SETS = {"minimal": MINIMAL, "production": PRODUCTION, "try-out": TRY_OUT}


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for o in objects:
        if o["kind"] == "Pod":
            specs.append((o["metadata"]["name"], o["spec"]))
        elif o["kind"] in ("Deployment", "StatefulSet", "Job"):
            specs.append((o["metadata"]["name"], o["spec"]["template"]["spec"]))
    return specs


@pytest.mark.parametrize("name", SETS)
def test_lint_is_clean(name: str) -> None:
    result = helm("lint", "--strict", str(CHART), values=SETS[name])
    assert "0 chart(s) failed" in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"config": {"kubernetes": {"storag_class": "fast"}}}, "storag_class"),
        ({"config": {"tctl": {"lease_secnds": 15}}}, "lease_secnds"),
        ({"config": {"max_executors": "many"}}, "/config/max_executors"),
        ({"config": {"backend": "local"}}, "'backend' not allowed"),
        ({"config": {"kubernetes": {"namespace": "x"}}}, "'namespace' not allowed"),
        ({"config": {"oidc": [{"issuer": "https://x.example.org"}]}}, "audience"),
        ({"api": {"replicas": "two"}}, "/api/replicas"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"imag": {"tag": "1"}}, "'imag' not allowed"),
        ({"database": {"url": "mysql://db/x"}}, "/database/url"),
        ({"api": {"ingress": {"enabled": True, "hosts": [{"host": "x"}]}}}, "paths"),
        ({"networkPolicy": {"tasks": {"storage": [{"to": [{"ipBlock": {"cidr": "10.0.0.0"}}]}]}}}, "cidr"),
        ({"networkPolicy": {"api": {"from": [{"ipBlok": {"cidr": "10.0.0.0/8"}}]}}}, "ipBlok"),
    ],
)
def test_the_schema_refuses_a_bad_values_file_naming_the_key(values: dict[str, Any], named: str) -> None:
    merged = copy.deepcopy(MINIMAL)
    for key, value in values.items():
        merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
    result = helm("template", "rel", str(CHART), values=merged, check=False)
    assert result.returncode != 0
    assert "schema" in result.stderr, result.stderr
    assert named in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"database": MINIMAL["database"], "networkPolicy": MINIMAL["networkPolicy"]}, "allow_anonymous"),
        ({"config": {"allow_anonymous": True}, "networkPolicy": MINIMAL["networkPolicy"]}, "no database"),
        ({**MINIMAL, "config": {"auth": ["basic"]}}, "basicUsers"),
        ({**MINIMAL, "postgresql": {"enabled": True}}, "exclusive"),
        (
            {**MINIMAL, "networkPolicy": {"tasks": {"apiServer": APISERVER}}},
            "networkPolicy.tasks.database.to",
        ),
        (
            {
                **MINIMAL,
                "networkPolicy": {"tasks": {"database": MINIMAL["networkPolicy"]["tasks"]["database"]}},
            },
            "networkPolicy.tasks.apiServer.cidrs",
        ),
    ],
)
def test_the_chart_refuses_an_unsafe_or_incomplete_release(values: dict[str, Any], says: str) -> None:
    result = helm("template", "rel", str(CHART), values=values, check=False)
    assert result.returncode != 0
    assert says in result.stderr, result.stderr


def test_an_older_cluster_is_refused() -> None:
    result = helm("template", "rel", str(CHART), "--kube-version", "1.28.9", values=MINIMAL, check=False)
    assert result.returncode != 0
    assert ">=1.29.0-0" in result.stderr, result.stderr


@pytest.mark.parametrize("version", ["1.29.15", "1.33.13"])
@pytest.mark.parametrize("name", SETS)
def test_every_object_is_valid_for_kubernetes(name: str, version: str) -> None:
    schema = KubeSchema(version)
    objects = render(SETS[name])
    problems = [p for o in objects for p in schema.errors(o)]
    assert not problems, "\n".join(problems)
    assert len(objects) >= 15


@pytest.mark.parametrize("name", SETS)
def test_poiesis_pods_hold_the_restricted_profile(name: str) -> None:
    for pod, spec in pod_specs(render(SETS[name])):
        assert spec["securityContext"]["runAsNonRoot"] is True, pod
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, pod
        assert not spec.get("hostNetwork"), pod
        assert not spec.get("hostPID"), pod
        for volume in spec.get("volumes", []):
            assert "hostPath" not in volume, pod
        for container in spec["containers"] + spec.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (pod, container["name"])
            assert sc["readOnlyRootFilesystem"] is True, (pod, container["name"])
            assert sc["capabilities"] == {"drop": ["ALL"]}, (pod, container["name"])


def test_the_settings_file_is_read_by_poiesis_as_the_values_say(tmp_path: Path) -> None:
    objects = render(PRODUCTION, release="tes", namespace="tes-system")
    (config_map,) = by_kind(objects, "ConfigMap")
    path = tmp_path / "poiesis.toml"
    path.write_text(config_map["data"]["poiesis.toml"])
    loaded = settings.load({"POIESIS_CONFIG": str(path)})
    assert loaded.backend == "kubernetes"
    assert loaded.host == "0.0.0.0"
    assert loaded.port == 8000
    assert loaded.migrate_on_start is False
    assert loaded.auth == ["oidc", "basic"]
    assert loaded.oidc[0].audience == ["poiesis"]
    assert loaded.service_name == "Research TES"
    assert loaded.max_executors == 50
    assert loaded.basic_users_file == "/etc/poiesis/users/users"
    k = loaded.kubernetes
    assert (k.namespace, k.image, k.image_pull_policy) == (
        "tes-tasks",
        "ghcr.io/poiesis-tes/poiesis:0.1.0",
        "Always",
    )
    assert (k.database_secret, k.storage_secret, k.storage_class) == ("tes-db-url", "tes-storage", "fast")
    assert k.tolerations[0]["key"] == "tasks"
    assert k.kueue_queue == "tes"
    assert loaded.tctl.start_timeout_seconds == 300
    assert loaded.tctl.workers == 16
    assert loaded.tctl.lease_name == "tes-poiesis-tctl"
    (lease,) = by_kind(objects, "Lease")
    assert lease["metadata"] == {**lease["metadata"], "name": "tes-poiesis-tctl", "namespace": "tes-tasks"}
    tctl_role = next(r for r in by_kind(objects, "Role") if r["metadata"]["name"].endswith("-tctl"))
    lease_rule = next(r for r in tctl_role["rules"] if r["resources"] == ["leases"])
    assert lease_rule["resourceNames"] == ["tes-poiesis-tctl"]
    assert "create" not in lease_rule["verbs"]
    # With Kueue, tctl reads Workloads (why a Job is held); without, it may not.
    assert {
        "apiGroups": ["kueue.x-k8s.io"],
        "resources": ["workloads"],
        "verbs": ["get", "list"],
    } in tctl_role["rules"]
    plain = next(r for r in by_kind(render(MINIMAL), "Role") if r["metadata"]["name"].endswith("-tctl"))
    assert all("kueue.x-k8s.io" not in r["apiGroups"] for r in plain["rules"])


def test_a_changed_setting_rolls_the_pods_and_nothing_else_does() -> None:
    def checksums(values: dict[str, Any]) -> set[str]:
        return {
            o["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            for o in by_kind(render(values), "Deployment")
        }

    first, again = checksums(MINIMAL), checksums(MINIMAL)
    changed = checksums({**MINIMAL, "config": {**MINIMAL["config"], "service_name": "Other"}})
    assert len(first) == 1
    assert first == again
    assert changed.isdisjoint(first)


def test_the_migration_runs_before_install_and_upgrade_with_its_own_secret() -> None:
    objects = render(MINIMAL)
    hooks = {o["kind"]: o for o in objects if "helm.sh/hook" in o["metadata"].get("annotations", {})}
    job, secret = hooks["Job"], hooks["Secret"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"]
    )
    assert "hook-succeeded" in secret["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[0]["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["poiesis", "migrate"]
    # With the in-chart PostgreSQL (made by the install itself) the Pods migrate before they start.
    try_out = render(TRY_OUT)
    assert not [o for o in try_out if o["kind"] == "Job"]
    for deployment in by_kind(try_out, "Deployment"):
        (init,) = deployment["spec"]["template"]["spec"]["initContainers"]
        assert init["command"] == ["poiesis", "migrate"]


def test_server_side_dry_run_on_the_real_apiserver_with_restricted_pod_security(kubeconfig: str) -> None:
    api = client.CoreV1Api(__import__("kubernetes").config.new_client_from_config(config_file=kubeconfig))
    suffix = uuid.uuid4().hex[:6]
    release_ns, task_ns = f"chart-{suffix}", f"chart-tasks-{suffix}"
    api.create_namespace(
        {
            "metadata": {
                "name": release_ns,
                # enforce rejects Pods (the test Pod); warn reports workloads whose Pods would be.
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/warn": "restricted",
                },
            }
        }
    )
    api.create_namespace(
        {"metadata": {"name": task_ns, "labels": {"pod-security.kubernetes.io/enforce": "baseline"}}}
    )
    kubectl = str(binaries_dir() / "kubectl")
    try:
        for name, values in SETS.items():
            values = copy.deepcopy(values)
            values.setdefault("tasks", {})["namespace"] = task_ns
            objects = render(values, namespace=release_ns)
            with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
                yaml.safe_dump_all(objects, f)
                f.flush()
                result = subprocess.run(
                    [kubectl, "--kubeconfig", kubeconfig, "apply", "--dry-run=server", "-f", f.name],
                    capture_output=True,
                    text=True,
                )
            assert result.returncode == 0, f"{name}: {result.stderr}"
            assert "Warning" not in result.stderr, f"{name}: {result.stderr}"
            assert result.stdout.count("(server dry run)") == len(objects), result.stdout
    finally:
        api.delete_namespace(release_ns)
        api.delete_namespace(task_ns)
        api.api_client.close()


def test_the_kubernetes_schema_check_finds_a_misspelt_field_and_a_kind_the_release_lacks() -> None:
    (deployment, *_) = by_kind(render(MINIMAL), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFs"] = True
    deployment["spec"]["replicas"] = "two"
    problems = KubeSchema("1.29.15").errors(deployment)
    assert any("readOnlyRootFs" in p for p in problems)
    assert any("spec.replicas" in p for p in problems)
    claim = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", "metadata": {"name": "x"}}
    assert KubeSchema("1.29.15").errors(claim) == [
        "ResourceClaim resource.k8s.io/v1: not served by Kubernetes 1.29.15"
    ]


def test_pods_carry_scrape_annotations_while_metrics_are_on() -> None:
    for deployment in by_kind(render(MINIMAL), "Deployment"):
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == "8000"
    off = {**MINIMAL, "config": {**MINIMAL["config"], "metrics": False}}
    for deployment in by_kind(render(off), "Deployment"):
        assert "prometheus.io/scrape" not in deployment["spec"]["template"]["metadata"]["annotations"]


def policies(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in by_kind(render(values), "NetworkPolicy")}


def test_task_pods_accept_nothing_and_reach_only_the_recorders_needs_and_the_listed_storage() -> None:
    made = policies(MINIMAL)
    assert set(made) == {"rel-poiesis-tasks", "rel-poiesis-api", "rel-poiesis-tctl"}
    tasks = made["rel-poiesis-tasks"]
    assert tasks["spec"]["podSelector"] == {
        "matchExpressions": [{"key": "poiesis.io/task", "operator": "Exists"}]
    }
    assert tasks["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert tasks["spec"]["ingress"] == []
    dns, apiserver, database = tasks["spec"]["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert apiserver == {
        "to": [{"ipBlock": {"cidr": "10.0.0.5/32"}}],
        "ports": [{"port": 6443, "protocol": "TCP"}],
    }
    assert database == {
        "to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}],
        "ports": [{"port": 5432, "protocol": "TCP"}],
    }
    # The API takes anyone on its port only; tctl takes nobody.
    assert made["rel-poiesis-api"]["spec"]["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    assert made["rel-poiesis-tctl"]["spec"]["ingress"] == []
    assert not policies({**MINIMAL, "networkPolicy": {"enabled": False}})


def test_public_egress_leaves_out_private_link_local_and_what_the_operator_excepts() -> None:
    tasks = policies(PRODUCTION)["rel-poiesis-tasks"]
    assert tasks["metadata"]["namespace"] == "tes-tasks"
    *_, storage, public = tasks["spec"]["egress"]
    assert storage == PRODUCTION["networkPolicy"]["tasks"]["storage"][0]
    v4, v6 = (peer["ipBlock"] for peer in public["to"])
    assert "ports" not in public
    assert v4["cidr"] == "0.0.0.0/0"
    assert v6["cidr"] == "::/0"
    for cidr in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "100.64.0.0/10",
        "203.0.113.0/24",
    ):
        assert cidr in v4["except"], cidr
    for cidr in ("fe80::/10", "fc00::/7", "2001:db8::/32"):
        assert cidr in v6["except"], cidr
    # Every address the metadata services of the major clouds answer on is excepted.
    for address in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"):
        ip = ipaddress.ip_address(address)
        block = v4 if ip.version == 4 else v6
        assert any(ip in ipaddress.ip_network(c) for c in block["except"]), address
    api = policies(PRODUCTION)["rel-poiesis-api"]["spec"]["ingress"][0]["from"]
    assert api[0] == PRODUCTION["networkPolicy"]["api"]["from"][0]
    assert api[1]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "test"
    tctl = policies(PRODUCTION)["rel-poiesis-tctl"]["spec"]["ingress"]
    assert tctl == [
        {
            "ports": [{"port": "metrics", "protocol": "TCP"}],
            "from": PRODUCTION["networkPolicy"]["metrics"]["from"],
        }
    ]


def test_the_in_chart_postgresql_takes_poiesis_pods_and_task_pods_only() -> None:
    made = policies({**TRY_OUT, "tasks": {"namespace": "tes-tasks"}})
    database = made["rel-poiesis-postgresql"]["spec"]
    (rule,) = database["ingress"]
    components = [
        p["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/component") for p in rule["from"]
    ]
    assert components == ["api", "tctl", "migrate", None]
    assert rule["from"][3]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "tes-tasks"}
    }
    egress = made["rel-poiesis-tasks"]["spec"]["egress"]
    assert any(
        peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component") == "postgresql"
        for rule in egress
        for peer in rule["to"]
    )
