"""Self-tests of the Kubernetes test cluster, with plain Kubernetes objects only.

They prove the simulated kubelet behaves as a TES task Pod needs before any Poiesis code relies on
it: ordered init containers beside a native sidecar, failures that stop the Pod, the reasons
Kubernetes gives, garbage collection, RBAC scoped to one Pod, and Leases.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.integration.k8s.conftest import wait_until

SIDECAR = "sidecar"


def container(name: str, **env: str) -> client.V1Container:
    return client.V1Container(
        name=name,
        image="registry.invalid/poiesis/test:1",
        command=["/bin/true"],
        env=[client.V1EnvVar(name=k, value=v) for k, v in env.items()] or None,
    )


def task_job(
    name: str,
    inits: list[client.V1Container],
    *,
    sidecar: bool = True,
    ttl: int | None = None,
    volumes: list[client.V1Volume] | None = None,
) -> client.V1Job:
    init_containers = []
    if sidecar:
        side = container(SIDECAR)
        side.restart_policy = "Always"
        init_containers.append(side)
    init_containers.extend(inits)
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=name, labels={"poiesis.io/task": name}),
        spec=client.V1JobSpec(
            backoff_limit=0,
            ttl_seconds_after_finished=ttl,
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"poiesis.io/task": name}),
                spec=client.V1PodSpec(
                    restart_policy="Never",
                    init_containers=init_containers,
                    containers=[container("pause")],
                    volumes=volumes,
                ),
            ),
        ),
    )


def job_pod(core: client.CoreV1Api, namespace: str, job: str) -> client.V1Pod:
    def find() -> client.V1Pod | None:
        pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items
        return pods[0] if pods else None

    return wait_until(find, what=f"the pod of job {job}")


def wait_for_phase(
    core: client.CoreV1Api, namespace: str, pod: str, phases: set[str], timeout: float = 30
) -> Any:
    return wait_until(
        lambda: (p := core.read_namespaced_pod(pod, namespace)).status.phase in phases and p,
        timeout=timeout,
        what=f"pod {pod} in {phases}",
    )


def record_statuses(core: client.CoreV1Api, namespace: str, job: str, until: set[str]) -> list[client.V1Pod]:
    """Every version of the job's pod that a watch delivers, until its phase is in `until`."""
    seen: list[client.V1Pod] = []
    w = watch.Watch()
    for event in w.stream(
        core.list_namespaced_pod, namespace, label_selector=f"job-name={job}", timeout_seconds=60
    ):
        pod = event["object"]
        seen.append(pod)
        if pod.status.phase in until:
            w.stop()
    return seen


def states(pod: client.V1Pod) -> dict[str, str]:
    out = {}
    for s in pod.status.init_container_statuses or []:
        out[s.name] = "running" if s.state.running else "terminated" if s.state.terminated else "waiting"
    return out


def test_init_containers_run_one_at_a_time_in_order_beside_a_running_sidecar(
    core: client.CoreV1Api, batch: client.BatchV1Api, namespace: str
) -> None:
    steps = ["step-0", "step-1", "step-2"]
    batch.create_namespaced_job(namespace, task_job("ordered", [container(n) for n in steps]))
    seen = record_statuses(core, namespace, "ordered", until={"Succeeded", "Failed"})
    assert seen[-1].status.phase == "Succeeded"
    running_order = []
    for pod in seen:
        st = states(pod)
        running = [n for n in steps if st.get(n) == "running"]
        assert len(running) <= 1, f"two init containers ran at once: {st}"
        if running:
            assert st[SIDECAR] == "running", "the sidecar runs throughout"
            i = steps.index(running[0])
            assert all(st[n] == "terminated" for n in steps[:i]), "earlier steps finished first"
            assert all(st[n] == "waiting" for n in steps[i + 1 :]), "later steps have not started"
            if not running_order or running_order[-1] != running[0]:
                running_order.append(running[0])
    assert running_order == steps, "the watch saw each step run, in order"
    final = {s.name: s.state.terminated for s in seen[-1].status.init_container_statuses}
    starts = [final[n].started_at for n in steps]
    ends = [final[n].finished_at for n in steps]
    assert all(ends[i] <= starts[i + 1] for i in range(2))
    wait_until(
        lambda: batch.read_namespaced_job("ordered", namespace).status.succeeded == 1, what="job succeeded"
    )


def test_a_failing_step_fails_the_pod_with_its_code_and_later_steps_never_start(
    core: client.CoreV1Api, batch: client.BatchV1Api, namespace: str
) -> None:
    inits = [container("step-0"), container("step-1", KWOK_EXIT_CODE="3"), container("step-2")]
    batch.create_namespaced_job(namespace, task_job("fails", inits))
    pod = job_pod(core, namespace, "fails")
    pod = wait_for_phase(core, namespace, pod.metadata.name, {"Failed", "Succeeded"})
    assert pod.status.phase == "Failed"
    by_name = {s.name: s for s in pod.status.init_container_statuses}
    assert by_name["step-0"].state.terminated.exit_code == 0
    assert by_name["step-1"].state.terminated.exit_code == 3
    assert by_name["step-1"].state.terminated.reason == "Error"
    assert by_name["step-2"].state.waiting is not None, "the third step never started"
    assert all(c.state.terminated is None for c in pod.status.container_statuses), "pause never ran"
    wait_until(
        lambda: any(
            c.type == "Failed" and c.status == "True"
            for c in batch.read_namespaced_job("fails", namespace).status.conditions or []
        ),
        what="job failed",
    )
    wait_until(
        lambda: (
            core.read_namespaced_pod(pod.metadata.name, namespace)
            .status.init_container_statuses[0]
            .state.terminated
        ),
        what="the sidecar stopped with the pod",
    )


def test_oomkilled_and_evicted_show_the_reasons_kubernetes_gives(
    core: client.CoreV1Api, batch: client.BatchV1Api, namespace: str
) -> None:
    batch.create_namespaced_job(
        namespace, task_job("oom", [container("step-0", KWOK_EXIT_CODE="137", KWOK_REASON="OOMKilled")])
    )
    batch.create_namespaced_job(namespace, task_job("evicted", [container("step-0", KWOK_EVICT="true")]))
    oom = wait_for_phase(
        core, namespace, job_pod(core, namespace, "oom").metadata.name, {"Failed", "Succeeded"}
    )
    terminated = {s.name: s.state.terminated for s in oom.status.init_container_statuses}["step-0"]
    assert (oom.status.phase, terminated.reason, terminated.exit_code) == ("Failed", "OOMKilled", 137)

    ev = wait_for_phase(
        core, namespace, job_pod(core, namespace, "evicted").metadata.name, {"Failed", "Succeeded"}
    )
    assert (ev.status.phase, ev.status.reason) == ("Failed", "Evicted")
    assert "low on resource" in ev.status.message
    disruption = [c for c in ev.status.conditions if c.type == "DisruptionTarget"]
    assert [(c.status, c.reason) for c in disruption] == [("True", "TerminationByKubelet")]


def test_a_hanging_step_runs_without_rewriting_its_pod(
    core: client.CoreV1Api, batch: client.BatchV1Api, namespace: str
) -> None:
    """A step that hangs is played once: its Pod's status then stays put (kwok would otherwise
    rewrite it with new timestamps for as long as it hangs, a load on the apiserver that grows with
    the Pods in flight), and the Pod still goes away when deleted."""
    batch.create_namespaced_job(
        namespace, task_job("hangs", [container("step-0"), container("step-1", KWOK_HANG="true")])
    )
    name = job_pod(core, namespace, "hangs").metadata.name
    wait_until(
        lambda: states(core.read_namespaced_pod(name, namespace)).get("step-1") == "running",
        what="the hanging step running",
    )
    time.sleep(1.5)  # $now moves on: a status played again now would differ
    # Any change to the Pod makes kwok look at it again, as its resyncs do.
    version = core.patch_namespaced_pod(name, namespace, {"metadata": {"labels": {"poked": "1"}}})
    time.sleep(3)  # kwok's step delay is 0.2 s: many steps' worth
    pod = core.read_namespaced_pod(name, namespace)
    assert pod.metadata.resource_version == version.metadata.resource_version, "the Pod was rewritten"
    assert states(pod) == {SIDECAR: "running", "step-0": "terminated", "step-1": "running"}
    batch.delete_namespaced_job("hangs", namespace, propagation_policy="Foreground")
    wait_until(
        lambda: not core.list_namespaced_pod(namespace, label_selector="job-name=hangs").items,
        what="the hanging Pod gone",
    )


def test_a_finished_job_is_collected_with_its_pod_and_claims(
    core: client.CoreV1Api, batch: client.BatchV1Api, namespace: str
) -> None:
    claim_spec = client.V1PersistentVolumeClaimSpec(
        access_modes=["ReadWriteOnce"],
        resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}),
        storage_class_name="kwok-volume",
    )
    ephemeral = client.V1Volume(
        name="work",
        ephemeral=client.V1EphemeralVolumeSource(
            volume_claim_template=client.V1PersistentVolumeClaimTemplate(spec=claim_spec)
        ),
    )
    job = batch.create_namespaced_job(
        namespace, task_job("ttl", [container("step-0")], ttl=1, volumes=[ephemeral])
    )
    owned = client.V1PersistentVolumeClaim(
        metadata=client.V1ObjectMeta(
            name="ttl-owned",
            owner_references=[
                client.V1OwnerReference(api_version="batch/v1", kind="Job", name="ttl", uid=job.metadata.uid)
            ],
        ),
        spec=claim_spec,
    )
    core.create_namespaced_persistent_volume_claim(namespace, owned)
    pod = job_pod(core, namespace, "ttl")
    wait_until(
        lambda: (
            all(
                c.status.phase == "Bound"
                for c in core.list_namespaced_persistent_volume_claim(namespace).items
            )
            and len(core.list_namespaced_persistent_volume_claim(namespace).items) == 2
        ),
        what="both claims bound",
    )
    assert (
        wait_for_phase(core, namespace, pod.metadata.name, {"Succeeded", "Failed"}).status.phase
        == "Succeeded"
    )

    def gone() -> bool:
        jobs = batch.list_namespaced_job(namespace).items
        pods = core.list_namespaced_pod(namespace).items
        claims = core.list_namespaced_persistent_volume_claim(namespace).items
        return not jobs and not pods and not claims

    wait_until(gone, timeout=60, what="job, pod and claims collected")


def _token(core: client.CoreV1Api, namespace: str, account: str) -> str:
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
    )
    return core.create_namespaced_service_account_token(account, namespace, request).status.token


def _as(api_client: client.ApiClient, token: str) -> client.CoreV1Api:
    cfg = client.Configuration()
    cfg.host = api_client.configuration.host
    cfg.ssl_ca_cert = api_client.configuration.ssl_ca_cert
    cfg.verify_ssl = api_client.configuration.verify_ssl
    cfg.api_key = {"authorization": f"Bearer {token}"}
    return client.CoreV1Api(client.ApiClient(cfg))


def test_a_role_scoped_to_one_pod_grants_exactly_that_pod_and_its_log(
    api_client: client.ApiClient, core: client.CoreV1Api, namespace: str, tmp_path: Path
) -> None:
    rbac = client.RbacAuthorizationV1Api(api_client)
    for name in ("mine", "other"):
        core.create_namespaced_pod(
            namespace,
            client.V1Pod(
                metadata=client.V1ObjectMeta(name=name),
                spec=client.V1PodSpec(containers=[container("main")], automount_service_account_token=False),
            ),
        )
    wait_for_phase(core, namespace, "mine", {"Running"})
    log_file = tmp_path / "main.log"
    log_file.write_text("2026-01-01T00:00:00Z stdout F hello from main\n")
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        "kwok.x-k8s.io",
        "v1alpha1",
        namespace,
        "logs",
        {
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "Logs",
            "metadata": {"name": "mine"},
            "spec": {"logs": [{"containers": ["main"], "logsFile": str(log_file)}]},
        },
    )
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="trec"))
    )
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="own-pod"),
            rules=[
                client.V1PolicyRule(
                    api_groups=[""],
                    resources=["pods"],
                    resource_names=["mine"],
                    verbs=["get", "watch", "list"],
                ),
                client.V1PolicyRule(
                    api_groups=[""], resources=["pods/log"], resource_names=["mine"], verbs=["get"]
                ),
            ],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="own-pod"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="own-pod"),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="trec", namespace=namespace)],
        ),
    )
    scoped = _as(api_client, _token(core, namespace, "trec"))

    def allowed() -> bool:
        try:
            scoped.read_namespaced_pod("mine", namespace)
            return True
        except ApiException as exc:
            if exc.status == 403:
                return False  # the binding may take a moment to reach the authorizer
            raise

    wait_until(allowed, timeout=10, what="the role to take effect")
    log = wait_until(
        lambda: _read_log(scoped, namespace, "mine"), timeout=20, what="the pod's log through the apiserver"
    )
    assert log == "hello from main\n"
    events = []
    w = watch.Watch()
    for event in w.stream(
        scoped.list_namespaced_pod, namespace, field_selector="metadata.name=mine", timeout_seconds=5
    ):
        events.append(event["object"].metadata.name)
        w.stop()
    assert events == ["mine"]

    for forbidden in (
        lambda: scoped.read_namespaced_pod("other", namespace),
        lambda: scoped.read_namespaced_pod_log("other", namespace, container="main"),
        lambda: scoped.list_namespaced_pod(namespace),
        lambda: scoped.delete_namespaced_pod("mine", namespace),
        lambda: scoped.read_namespaced_pod("mine", "default"),
    ):
        with pytest.raises(ApiException) as caught:
            forbidden()
        assert caught.value.status == 403


def _read_log(api: client.CoreV1Api, namespace: str, pod: str) -> str | None:
    try:
        return str(api.read_namespaced_pod_log(pod, namespace, container="main"))
    except ApiException as exc:
        if exc.status in (400, 404, 500, 502):
            return None
        raise


def test_a_lease_is_held_renewed_and_taken_over_when_it_expires(
    api_client: client.ApiClient, namespace: str
) -> None:
    leases = client.CoordinationV1Api(api_client)
    duration = 2

    def now() -> datetime:
        return datetime.now(UTC)

    lease = leases.create_namespaced_lease(
        namespace,
        client.V1Lease(
            metadata=client.V1ObjectMeta(name="leader"),
            spec=client.V1LeaseSpec(
                holder_identity="a",
                lease_duration_seconds=duration,
                acquire_time=now(),
                renew_time=now(),
                lease_transitions=0,
            ),
        ),
    )

    def try_acquire(identity: str) -> bool:
        """Take the lease if it is free or expired: a compare-and-swap on resourceVersion."""
        current = leases.read_namespaced_lease("leader", namespace)
        spec = current.spec
        expired = spec.renew_time + timedelta(seconds=spec.lease_duration_seconds) < now()
        if spec.holder_identity not in (identity, None) and not expired:
            return False
        if spec.holder_identity != identity:
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
            spec.acquire_time = now()
        spec.holder_identity = identity
        spec.renew_time = now()
        try:
            leases.replace_namespaced_lease("leader", namespace, current)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    for _ in range(3):  # a renews, b is refused while a's lease is fresh
        assert try_acquire("a")
        assert not try_acquire("b")
        time.sleep(0.5)
    stale = leases.read_namespaced_lease("leader", namespace)
    time.sleep(duration + 0.5)  # a stops renewing
    assert try_acquire("b")
    taken = leases.read_namespaced_lease("leader", namespace)
    assert (taken.spec.holder_identity, taken.spec.lease_transitions) == ("b", 1)
    stale.spec.renew_time = now()
    with pytest.raises(ApiException) as caught:  # a's late renewal, from what it last read, loses
        leases.replace_namespaced_lease("leader", namespace, stale)
    assert caught.value.status == 409
    assert lease.metadata.resource_version != taken.metadata.resource_version


def test_concurrent_jobs_all_finish(core: client.CoreV1Api, batch: client.BatchV1Api, namespace: str) -> None:
    names = [f"many-{i}" for i in range(10)]
    threads = [
        threading.Thread(target=batch.create_namespaced_job, args=(namespace, task_job(n, [container("s")])))
        for n in names
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_until(
        lambda: all((batch.read_namespaced_job(n, namespace).status.succeeded or 0) == 1 for n in names),
        timeout=60,
        what="all jobs succeeded",
    )
