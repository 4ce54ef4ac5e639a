"""Print the kwokctl configuration of the Poiesis test cluster: usage `render.py <bin-dir>`.

The cluster runs the real control plane from <bin-dir>, everything on 127.0.0.1. Its Stages are the
TES ones in stages.yaml plus, read from the kwok module (the same version the binaries were built
from), kwok's own node, pod-deletion and volume stages: a config that names any Stage replaces all of
kwok's defaults, so those are listed explicitly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
KWOK_MODULE = "sigs.k8s.io/kwok@v" + os.environ.get("POIESIS_KWOK_VERSION", "0.8.0")
UPSTREAM_STAGES = [
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-delete.yaml",
    "volume/fast/pv-bind.yaml",
    "volume/fast/pv-delete.yaml",
    "volume/fast/pvc-provision.yaml",
    "volume/fast/pvc-delete.yaml",
]


def kwok_module_dir() -> Path:
    env = os.environ | {"GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    out = subprocess.run(
        ["go", "mod", "download", "-json", KWOK_MODULE], check=True, capture_output=True, text=True, env=env
    ).stdout
    return Path(json.loads(out)["Dir"])


def main(bin_dir: str) -> None:
    b = Path(bin_dir)
    config = {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokctlConfiguration",
        "options": {
            "runtime": "binary",
            "bindAddress": "127.0.0.1",
            "kubeApiserverBinary": str(b / "kube-apiserver"),
            "kubeControllerManagerBinary": str(b / "kube-controller-manager"),
            "kubeSchedulerBinary": str(b / "kube-scheduler"),
            "kubectlBinary": str(b / "kubectl"),
            "kwokControllerBinary": str(b / "kwok"),
            "etcdBinary": str(b / "etcd"),
            "enableCRDs": ["Logs", "ClusterLogs"],
            "kubeAuthorization": True,
            "kubeAdmission": True,
            # No inflight caps or priority-and-fairness queueing: the Task Controller benchmark
            # holds thousands of Pods. This also lifts the controller-manager's and scheduler's client QPS.
            "disableQPSLimits": True,
        },
        "componentsPatches": [
            {
                "name": "kube-apiserver",
                "extraArgs": [{"key": "advertise-address", "value": "127.0.0.1"}],
            },
            {"name": "etcd", "extraArgs": [{"key": "unsafe-no-fsync", "value": "true"}]},
            {
                "name": "kube-controller-manager",
                # Quick Job and TTL controllers, so tests wait on them for seconds, not minutes.
                "extraArgs": [
                    {"key": "concurrent-ttl-after-finished-syncs", "value": "20"},
                    {"key": "concurrent-job-syncs", "value": "20"},
                    {"key": "concurrent-gc-syncs", "value": "40"},
                ],
            },
        ],
    }
    if os.environ.get("POIESIS_REAL_NODE"):
        # A real kubelet's cluster keeps Kubernetes' own node heartbeats (kwokctl's are 5 times
        # slower): a node silent for 40 s is not ready, as on any cluster (the node fault tests).
        config["options"]["heartbeatFactor"] = 1  # type: ignore[index]
    # kwok plays each Pod's status steps as API writes: more of them in flight than its default 4
    # keeps thousands of Pods moving when each write waits on a busy apiserver. kwokctl hands this
    # document to kwok without kwok's defaults, so the other options carry kwok's default values.
    kwok = {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokConfiguration",
        "options": {
            "podPlayStageParallelism": 16,
            "nodePlayStageParallelism": 4,
            "nodeLeaseParallelism": 4,
            "podsOnNodeSyncParallelism": 1,
            "cidr": "10.0.0.1/24",
            "enableDebuggingHandlers": True,  # the logs kwok serves for the Logs CRD
            "enableProfilingHandler": False,
            "enableContentionProfiling": False,
            "enablePodsOnNodeSyncListPager": True,
            "enablePodsOnNodeSyncStreamWatch": False,
        },
    }
    node_ip = os.environ.get("POIESIS_REAL_NODE")
    if node_ip:
        pki = (
            Path(os.environ["KWOK_WORKDIR"])
            / "clusters"
            / os.environ.get("POIESIS_CLUSTER_NAME", "poiesis")
            / "pki"
        )
        # A real kubelet joins this cluster (scripts/real-node, inside its network namespace): kwok
        # keeps to the fake nodes, and the apiserver reaches the real one at its address (its name
        # resolves nowhere here). The apiserver also listens on the node's address and advertises
        # it, so kube-proxy routes the `kubernetes` Service (10.0.0.1, in its certificate) there and
        # Pods on the Pod network reach it as in any cluster.
        config["componentsPatches"].append(
            {
                "name": "kwok-controller",
                "extraArgs": [
                    {"key": "manage-all-nodes", "value": "false", "override": True},
                    {"key": "manage-nodes-with-annotation-selector", "value": "kwok.x-k8s.io/node=fake"},
                ],
            }
        )
        config["componentsPatches"][0]["extraArgs"] = [
            {"key": "advertise-address", "value": node_ip},
            {"key": "bind-address", "value": "0.0.0.0", "override": True},
            {"key": "kubelet-preferred-address-types", "value": "InternalIP,Hostname"},
            # The real kubelet authenticates every caller (anonymous off): the apiserver presents
            # the cluster admin's certificate for logs, exec and port-forward.
            {"key": "kubelet-client-certificate", "value": str(pki / "admin.crt")},
            {"key": "kubelet-client-key", "value": str(pki / "admin.key")},
        ]
        config["options"]["kubeApiserverCertSANs"] = ["10.0.0.1", node_ip]
    docs = [json.dumps(config, indent=1), json.dumps(kwok, indent=1)]
    upstream = kwok_module_dir() / "kustomize" / "stage"
    docs += [(upstream / name).read_text() for name in UPSTREAM_STAGES]
    docs.append((HERE / "stages.yaml").read_text())
    print("\n---\n".join(d.strip() for d in docs))


if __name__ == "__main__":
    main(sys.argv[1])
