"""`poiesis trec`: the Task Recorder, the native sidecar of every TaskPod.

It watches its own Pod and writes what the Pod shows as it happens (`recording.PodRecorder`):
INITIALIZING when staging starts, RUNNING when the first executor starts, each executor's log
(start, end, real exit code, bounded stdout/stderr tails), a filer's failure line into
`system_logs`, the output file logs, and the terminal state; what one Pod status shows new is one
transaction, and a status seen again writes nothing. Then it marks the end on the status volume so
the Pod's main container exits and the Job completes. This module keeps the process: the
environment, the signals and the follow loop.

Every write is idempotent (guarded transitions, upserted executor logs, output logs recorded once),
so a restarted recorder repeats nothing wrongly. It holds no idle database connection: each write
opens one and closes it. It reaches PostgreSQL through asyncpg alone (`postgres.records`): no
SQLAlchemy is imported in a task Pod. Its credentials read exactly its own Pod and its log; the grant
arrives just after the Pod is created, so 403/404 at start are waited out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path
from typing import Any

import msgspec

from poiesis.adapters.clock import SystemClock
from poiesis.adapters.kubernetes.podapi import (
    IN_CLUSTER,
    ApiError,
    ApiUnavailable,
    PodApi,
    PodNotReadable,
    WatchExpired,
)
from poiesis.adapters.kubernetes.recording import PodRecorder
from poiesis.adapters.kubernetes.taskpod import (
    OUTPUTS_REPORT,
    STATUS_DIR,
    VOLUME_ROOT,
    ReportedOutputs,
    executor_container,
)
from poiesis.adapters.postgres.records import PostgresTaskRecords
from poiesis.domain.tes import OutputFileLog, View
from poiesis.ports.clock import Clock
from poiesis.ports.store import StoreUnavailable, TaskRecords

log = logging.getLogger("poiesis.trec")


class Config(msgspec.Struct, kw_only=True, frozen=True):
    task_id: str
    pod_name: str
    namespace: str
    database_url: str
    api_server: str | None = None
    """The Kubernetes API; None: in-cluster (KUBERNETES_SERVICE_HOST, the mounted token and CA)."""
    token_file: str = f"{IN_CLUSTER}/token"
    ca_file: str | None = f"{IN_CLUSTER}/ca.crt"
    volume: str = VOLUME_ROOT
    status_dir: str = STATUS_DIR
    tail_bytes: int = 64 * 1024
    grant_wait_seconds: float = 120.0


class Recorder:
    """The Pod's own recorder: a PodRecorder reading the executors' tails and the output report
    from the Pod's volumes, and the recorded mark that lets the Pod's main container end."""

    def __init__(self, cfg: Config, store: TaskRecords, api: PodApi, clock: Clock | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.api = api
        self.clock = clock or SystemClock()
        self.since = self.clock.now()
        """When this recorder started: before the Pod's other containers (a native sidecar)."""
        self.pod: PodRecorder | None = None
        self.recorded = False

    async def _tail(self, index: int) -> tuple[str, str]:
        """stdout and stderr tails: the launcher's files on the status volume, or else the
        container log (both streams, as Kubernetes keeps them) as stdout."""
        prefix = Path(self.cfg.status_dir) / executor_container(index)
        limit = self.cfg.tail_bytes

        def files() -> tuple[str, str] | None:
            try:
                out = prefix.with_suffix(".stdout").read_bytes()[-limit:]
                err = prefix.with_suffix(".stderr").read_bytes()[-limit:]
            except OSError:
                return None
            return out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

        found = await asyncio.to_thread(files)
        if found is not None:
            return found
        try:
            text = await self.api.log_tail(
                self.cfg.namespace, self.cfg.pod_name, executor_container(index), limit
            )
        except ApiError as exc:
            log.warning("reading executor %d's log failed: %s", index, exc)
            text = ""
        return text, ""

    async def _outputs(self) -> list[OutputFileLog]:
        def read() -> list[OutputFileLog]:
            try:
                return msgspec.json.decode(
                    Path(self.cfg.volume + OUTPUTS_REPORT).read_bytes(), type=ReportedOutputs
                ).outputs
            except (OSError, msgspec.DecodeError):
                return []

        return await asyncio.to_thread(read)

    async def reconcile(self, pod: dict[str, Any]) -> None:
        if self.pod is None:
            task = await self.store.get(self.cfg.task_id, view=View.FULL)
            self.pod = PodRecorder(
                self.store, task, self.clock.now, tails=self._tail, outputs=self._outputs, since=self.since
            )
        if await self.pod.record(pod):
            self._mark_recorded()

    def _mark_recorded(self) -> None:
        if not self.recorded:
            with contextlib.suppress(OSError):
                (Path(self.cfg.status_dir) / "recorded").touch()
            self.recorded = True


def _phase(pod: dict[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


GRANT_PAUSE_FIRST = 0.2
GRANT_PAUSE_MAX = 2.0


async def follow(recorder: Recorder, api: PodApi, cfg: Config) -> None:
    """Reconcile every state of the Pod until its end is recorded or the Pod is gone."""
    deadline = recorder.clock.monotonic() + cfg.grant_wait_seconds
    first = True
    pause = GRANT_PAUSE_FIRST
    while True:
        try:
            pod = await api.pod(cfg.namespace, cfg.pod_name)
            pause = GRANT_PAUSE_FIRST
            if first:
                log.info("recording task %s from Pod %s", cfg.task_id, cfg.pod_name)
                first = False
            await _reconcile(recorder, pod)
            if recorder.recorded and _phase(pod) in ("Succeeded", "Failed"):
                return
            version = str(pod["metadata"]["resourceVersion"])
            async for kind, obj in api.watch_pod(cfg.namespace, cfg.pod_name, version):
                if kind == "DELETED":
                    await _reconcile(recorder, obj)
                    return
                await _reconcile(recorder, obj)
                if recorder.recorded and _phase(obj) in ("Succeeded", "Failed"):
                    return
        except PodNotReadable as exc:
            if recorder.clock.monotonic() < deadline:
                # Just after the Pod starts: its grant (403), or the apiserver's view of the fresh
                # ServiceAccount behind the token (401), may not be there yet. Backing off keeps
                # a burst of new Pods from polling the apiserver hard while it catches up.
                await asyncio.sleep(pause)
                pause = min(pause * 1.5, GRANT_PAUSE_MAX)
                continue
            log.warning("cannot read the Pod (%s): nothing more to record", exc)
            return
        except WatchExpired:
            continue  # start again from a GET
        except ApiUnavailable as exc:
            log.warning("the Kubernetes API did not answer, retrying: %s", exc)
            await asyncio.sleep(1)
        except ApiError as exc:
            log.warning("watching the Pod failed, retrying: %s", exc)
            await asyncio.sleep(1)


async def record(cfg: Config, store: TaskRecords, api: PodApi, stopping: asyncio.Event) -> None:
    """Follow the Pod until its end is recorded, it is gone, or `stopping` is set; then, if stopped
    early, look at the Pod once more (it is ending) and record what it shows."""
    recorder = Recorder(cfg, store, api)
    following = asyncio.create_task(follow(recorder, api, cfg))
    stopped = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({following, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not following.done():
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
            with contextlib.suppress(ApiError):
                await _reconcile(recorder, await api.pod(cfg.namespace, cfg.pod_name))
        else:
            following.result()
    finally:
        stopped.cancel()


async def run(cfg: Config) -> int:
    store = PostgresTaskRecords(cfg.database_url)
    api = PodApi(cfg.api_server, cfg.token_file, cfg.ca_file) if cfg.api_server else PodApi.in_cluster()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await record(cfg, store, api, stopping)
    finally:
        await api.aclose()
    return 0


async def _reconcile(recorder: Recorder, pod: dict[str, Any]) -> None:
    for attempt in range(30):
        try:
            await recorder.reconcile(pod)
            return
        except StoreUnavailable as exc:
            log.warning("database unavailable (attempt %d), retrying: %s", attempt + 1, exc)
            await asyncio.sleep(min(0.2 * 2**attempt, 5))


def config_from_env(environ: dict[str, str] | None = None) -> Config:
    env = dict(os.environ if environ is None else environ)
    return Config(
        task_id=env["POIESIS_TASK_ID"],
        pod_name=env["POIESIS_POD_NAME"],
        namespace=env["POIESIS_POD_NAMESPACE"],
        database_url=env["POIESIS_DATABASE_URL"],
        api_server=env.get("POIESIS_TREC_API_SERVER"),
        token_file=env.get("POIESIS_TREC_TOKEN_FILE", f"{IN_CLUSTER}/token"),
        ca_file=env.get("POIESIS_TREC_CA_FILE", f"{IN_CLUSTER}/ca.crt") or None,
        volume=env.get("POIESIS_TREC_VOLUME", VOLUME_ROOT),
        status_dir=env.get("POIESIS_TREC_STATUS_DIR", STATUS_DIR),
        tail_bytes=int(env.get("POIESIS_EXECUTOR_LOG_TAIL_BYTES", 64 * 1024)),
    )
