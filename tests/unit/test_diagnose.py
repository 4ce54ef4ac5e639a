"""How the Task Controller reads a Pod whose end nobody recorded (the table in `diagnose`)."""

from __future__ import annotations

import pytest

from poiesis.adapters.kubernetes import diagnose
from poiesis.domain.states import State
from poiesis.domain.tes import Resources
from tests.builders import make_task
from tests.conftest import FakeClock
from tests.support.pods import disruption, pod, running, terminated, unschedulable, waiting


def test_a_running_pod_has_no_verdict() -> None:
    task = make_task(FakeClock())
    assert diagnose.ended(task, pod(task.id, running("trec"), running("executor-0"))) is None


def test_an_executor_oom_is_executor_error_with_its_limit() -> None:
    task = make_task(FakeClock(), resources=Resources(ram_gb=2))
    seen = pod(
        task.id,
        running("trec"),
        terminated("tif"),
        terminated("executor-0", 137, "OOMKilled"),
        phase="Failed",
    )
    verdict = diagnose.ended(task, seen)
    assert verdict is not None
    assert (verdict.state, verdict.reason) == (State.EXECUTOR_ERROR, "OOMKilled")
    assert "executor 0" in verdict.line
    assert "2 GB" in verdict.line
    assert "137" in verdict.line


def test_a_poiesis_container_oom_is_a_system_error() -> None:
    task = make_task(FakeClock())
    seen = pod(task.id, running("trec"), terminated("tif", 137, "OOMKilled"), phase="Failed")
    verdict = diagnose.ended(task, seen)
    assert verdict is not None
    assert (verdict.state, verdict.reason) == (State.SYSTEM_ERROR, "OOMKilled")
    assert "tif" in verdict.line


def test_eviction_wins_over_the_exit_code_it_caused() -> None:
    task = make_task(FakeClock())
    seen = pod(
        task.id,
        running("trec"),
        terminated("tif"),
        terminated("executor-0", 137),
        phase="Failed",
        reason="Evicted",
        message="The node was low on resource: memory.",
        conditions=[disruption("TerminationByKubelet")],
    )
    verdict = diagnose.ended(task, seen)
    assert verdict is not None
    assert (verdict.state, verdict.reason) == (State.PREEMPTED, "TerminationByKubelet")
    assert "low on resource: memory" in verdict.line


def test_a_lost_node_is_preempted_even_when_only_the_deleted_pod_says_so() -> None:
    task = make_task(FakeClock())
    seen = pod(task.id, running("trec"), running("executor-0"), conditions=[disruption("DeletionByPodGC")])
    assert diagnose.ended(task, seen) is None, "still running and not deleted: not ended"
    verdict = diagnose.ended(task, seen, deleted=True)
    assert verdict is not None
    assert (verdict.state, verdict.reason) == (State.PREEMPTED, "DeletionByPodGC")
    assert "node" in verdict.line


def test_a_pod_deleted_by_hand_is_a_system_error() -> None:
    task = make_task(FakeClock())
    verdict = diagnose.ended(task, pod(task.id, running("trec"), running("executor-0")), deleted=True)
    assert verdict is not None
    assert (verdict.state, verdict.reason) == (State.SYSTEM_ERROR, "Deleted")


def test_the_steps_decide_when_they_can() -> None:
    task = make_task(FakeClock(), executors=2)
    failed = pod(
        task.id, terminated("tif"), terminated("executor-0"), terminated("executor-1", 3), phase="Failed"
    )
    assert diagnose.ended(task, failed) == diagnose.Verdict(
        State.EXECUTOR_ERROR, "Error", "the recorder did not record the task's end (Kubernetes shows it)"
    )
    done = pod(
        task.id, terminated("tif"), terminated("executor-0"), terminated("executor-1"), phase="Succeeded"
    )
    verdict = diagnose.ended(task, done)
    assert verdict is not None
    assert verdict.state is State.COMPLETE
    line = "input 0 (/in) from s3://b/k: not found"
    filer = pod(task.id, terminated("tif", 1, message=line), phase="Failed")
    assert diagnose.ended(task, filer) == diagnose.Verdict(State.SYSTEM_ERROR, "Error", line)


def test_a_pod_failed_for_its_own_reason_is_a_system_error_whatever_the_killed_executor_shows() -> None:
    task = make_task(FakeClock())
    seen = pod(
        task.id,
        terminated("trec"),
        terminated("tif"),
        terminated("executor-0", 137),
        phase="Failed",
        reason="DeadlineExceeded",
        message="Pod was active too long",
    )
    assert diagnose.ended(task, seen) == diagnose.Verdict(
        State.SYSTEM_ERROR,
        "DeadlineExceeded",
        "the task's Pod failed (DeadlineExceeded): Pod was active too long",
    )


def test_pods_that_cannot_start() -> None:
    task = make_task(FakeClock())
    pull = pod(
        task.id, running("trec"), waiting("executor-0", "ImagePullBackOff", "Back-off", image="nope:1")
    )
    found = diagnose.stuck(pull)
    assert found is not None
    assert found.reason == "ImagePullBackOff"
    assert "nope:1" in found.line
    sched = pod(
        task.id, phase="Pending", conditions=[unschedulable("0/3 nodes are available: 3 Insufficient cpu.")]
    )
    found = diagnose.stuck(sched)
    assert found is not None
    assert found.reason == "Unschedulable"
    assert "Insufficient cpu" in found.line
    assert diagnose.stuck(pod(task.id, running("trec"), waiting("executor-0", "PodInitializing"))) is None
    assert diagnose.stuck(pod(task.id, waiting("executor-0", "ErrImagePull"), deleting=True)) is None


def test_a_failed_job_gives_its_condition() -> None:
    job = {
        "status": {
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "DeadlineExceeded",
                    "message": "Job was active longer than specified deadline",
                }
            ]
        }
    }
    verdict = diagnose.job_failed(job)
    assert verdict is not None
    assert (verdict.state, verdict.reason) == (State.SYSTEM_ERROR, "DeadlineExceeded")
    assert diagnose.job_failed({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}) is None


# The kubelet's words, as containerd 1.6 and the kubelet 1.33 write them on the real node.
_NOT_FOUND = (
    'rpc error: code = NotFound desc = failed to pull and unpack image "registry.test/nope:1": failed to'
    ' resolve reference "registry.test/nope:1": registry.test/nope:1: not found'
)
_DENIED = (
    'failed to pull and unpack image "registry.test/private:1": failed to resolve reference'
    ' "registry.test/private:1": pull access denied, repository does not exist or may require'
    " authorization: server message: insufficient_scope: authorization failed"
)
_UNAVAILABLE = (
    'rpc error: code = Unknown desc = failed to pull and unpack image "registry.test/busy:1": failed to'
    ' resolve reference "registry.test/busy:1": unexpected status from HEAD request to'
    " http://registry.test/v2/busy/manifests/1: 503 Service Unavailable"
)
_REFUSED = (
    'failed to pull and unpack image "registry.test/x:1": failed to resolve reference "registry.test/x:1":'
    ' failed to do request: Head "http://127.0.0.1:9/v2/x/manifests/1": dial tcp 127.0.0.1:9: connect:'
    " connection refused"
)


@pytest.mark.parametrize(
    ("reason", "message", "final"),
    [
        pytest.param("ErrImagePull", _NOT_FOUND, True, id="not-found"),
        pytest.param(
            "ImagePullBackOff",
            f'Back-off pulling image "x": ErrImagePull: {_NOT_FOUND}',
            True,
            id="backoff-not-found",
        ),
        pytest.param("ErrImagePull", _DENIED, True, id="denied"),
        pytest.param("ErrImagePull", "failed to authorize: 401 Unauthorized", True, id="unauthorized"),
        pytest.param(
            "InvalidImageName", 'Failed to apply default image tag "Bad:Name"', True, id="invalid-name"
        ),
        pytest.param(
            "ErrImageNeverPull", "Container image is not present with pull policy of Never", True, id="never"
        ),
        pytest.param(
            "CreateContainerConfigError",
            "container has runAsNonRoot and image will run as root (pod: x, container: executor-0)",
            True,
            id="root-under-restricted",
        ),
        pytest.param("ErrImagePull", _UNAVAILABLE, False, id="503"),
        pytest.param("ErrImagePull", _REFUSED, False, id="connection-refused"),
        pytest.param("ErrImagePull", "context deadline exceeded", False, id="timeout"),
        pytest.param("ImagePullBackOff", 'Back-off pulling image "x"', False, id="backoff-without-words"),
        pytest.param(
            "CreateContainerConfigError", 'secret "poiesis-storage" not found', False, id="missing-secret"
        ),
    ],
)
def test_a_pull_error_that_says_the_image_cannot_exist_is_final(
    reason: str, message: str, final: bool
) -> None:
    task = make_task(FakeClock())
    found = diagnose.stuck(pod(task.id, running("trec"), waiting("executor-0", reason, message, "x:1")))
    assert found is not None
    assert found.final is final
    assert message in found.line
    assert ("restricted runs no image as root" in found.line) is ("runAsNonRoot" in message)


def test_why_kueue_holds_a_job_comes_from_its_workloads_conditions() -> None:
    held = {
        "status": {
            "conditions": [
                {
                    "type": "QuotaReserved",
                    "status": "False",
                    "reason": "Pending",
                    "message": "couldn't assign flavors to pod set main: insufficient unused quota for cpu",
                },
            ]
        }
    }
    assert diagnose.admission([held], "lab-a") == (
        "Kueue: couldn't assign flavors to pod set main: insufficient unused quota for cpu"
    )
    assert (
        diagnose.admission([], "lab-a") == "Kueue has made no Workload for the task's Job yet (queue lab-a)"
    )
    assert diagnose.admission([{"status": {}}], "lab-a") == "Kueue has not admitted the task's Job yet"
