"""The Task Controller's Lease on the real apiserver."""

from __future__ import annotations

from typing import Any

import msgspec
from kubernetes import client

from poiesis.adapters.kubernetes.lease import KubeLeases, LeaseRecord, _micro_time


async def test_taking_a_lease_someone_else_made_keeps_its_labels_and_annotations(
    api_client: client.ApiClient, namespace: str
) -> None:
    # As a Helm release makes it: helm removes on uninstall only what still carries its marks.
    marks = {
        "labels": {"app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/instance": "rel"},
        "annotations": {"meta.helm.sh/release-name": "rel", "meta.helm.sh/release-namespace": "tes"},
    }
    coordination: Any = client.CoordinationV1Api(api_client)
    coordination.create_namespaced_lease(namespace, {"metadata": {"name": "tctl", **marks}, "spec": {}})
    leases = KubeLeases(api_client, namespace, "tctl")
    free = await leases.get()
    assert free is not None
    assert free.holder is None
    taken = msgspec.structs.replace(
        free, holder="tctl-0", lease_seconds=15, renew_time=_micro_time(1796083200.0)
    )
    assert await leases.update(taken)
    again = await leases.get()
    assert again is not None
    assert again.holder == "tctl-0"
    assert not await leases.update(taken)  # written from a stale version: refused
    stored = coordination.read_namespaced_lease("tctl", namespace).metadata
    assert stored.labels == marks["labels"]
    assert stored.annotations == marks["annotations"]


async def test_a_renewal_stamped_on_a_whole_second_is_accepted(
    api_client: client.ApiClient, namespace: str
) -> None:
    leases = KubeLeases(api_client, namespace, "tctl")
    stamp = _micro_time(1796083200.0)  # 2026-12-01T00:00:00 exactly
    record = LeaseRecord(holder="tctl-0", lease_seconds=15, renew_time=stamp, acquire_time=stamp)
    assert await leases.create(record)
    stored = client.CoordinationV1Api(api_client).read_namespaced_lease("tctl", namespace).spec
    assert stored.holder_identity == "tctl-0"
    assert stored.renew_time.timestamp() == 1796083200.000001
