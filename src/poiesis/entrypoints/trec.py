"""`poiesis trec`: the Task Recorder, the native sidecar of every TaskPod.

It watches its own Pod and writes what the Pod shows as it happens: INITIALIZING when staging
starts, RUNNING when the first executor starts, each executor's log (start, end, real exit code,
bounded stdout/stderr tails), a filer's failure line into `system_logs`, the output file logs, and
the terminal state. Then it marks the end on the status volume so the Pod's main container exits
and the Job completes.

Every write is idempotent (guarded transitions, upserted executor logs, output logs recorded once),
so a restarted recorder repeats nothing wrongly. It holds no idle database connection: each write
opens one and closes it (NullPool). Its credentials read exactly its own Pod and its log; the grant
arrives just after the Pod is created, so 403/404 at start are waited out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec

from poiesis.adapters.kubernetes import diagnose, observe
from poiesis.adapters.kubernetes.podapi import IN_CLUSTER, ApiError, PodApi
from poiesis.adapters.kubernetes.render import OUTPUTS_REPORT, STATUS_DIR, VOLUME_ROOT
from poiesis.adapters.sqlalchemy.engine import create_engine
from poiesis.adapters.sqlalchemy.store import SqlAlchemyTaskStore
from poiesis.domain import lifecycle
from poiesis.domain.states import State, is_terminal
from poiesis.domain.tes import OutputFileLog, Task, View
from poiesis.domain.times import rfc3339
from poiesis.ports.store import StoreUnavailable

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


def _iso(value: Any) -> str:
    return value if isinstance(value, str) else rfc3339(value)


class Recorder:
    def __init__(self, cfg: Config, store: SqlAlchemyTaskStore, api: PodApi) -> None:
        self.cfg = cfg
        self.store = store
        self.api = api
        self.task: Task | None = None
        self._ended: set[int] = set()
        self._written: State | None = None
        self.recorded = False

    async def _tail(self, index: int) -> tuple[str, str]:
        """stdout and stderr tails: the launcher's files on the status volume, or else the
        container log (both streams, as Kubernetes keeps them) as stdout."""
        prefix = Path(self.cfg.status_dir) / f"executor-{index}"
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
            text = await self.api.log_tail(self.cfg.namespace, self.cfg.pod_name, f"executor-{index}", limit)
        except (ApiError, httpx.HTTPError) as exc:
            log.warning("reading executor %d's log failed: %s", index, exc)
            text = ""
        return text, ""

    def _outputs(self) -> list[OutputFileLog]:
        path = Path(self.cfg.volume + OUTPUTS_REPORT)
        try:
            report = msgspec.json.decode(path.read_bytes())
        except (OSError, msgspec.DecodeError):
            return []
        return msgspec.convert(report.get("outputs") or [], list[OutputFileLog])

    async def reconcile(self, pod: dict[str, Any]) -> None:
        store, task_id = self.store, self.cfg.task_id
        if self.task is None:
            self.task = await store.get(task_id, view=View.FULL)
        task = self.task
        now = rfc3339_now()
        progress = lifecycle.Progress()
        for event in observe.events(task, pod):
            progress = lifecycle.apply(task.executors, bool(task.outputs), progress, event)
            match event:
                case lifecycle.StagingStarted():
                    await store.transition(task_id, State.INITIALIZING, now=now)
                case lifecycle.ExecutorStarted(index=index, at=at):
                    await store.transition(task_id, State.RUNNING, now=_iso(at))
                    if index not in self._ended:
                        await store.record_executor(task_id, index, start_time=_iso(at))
                case lifecycle.ExecutorExited(index=index, exit_code=code, at=at):
                    if index not in self._ended:
                        out, err = await self._tail(index)
                        await store.record_executor(
                            task_id, index, end_time=_iso(at), exit_code=code, stdout=out, stderr=err
                        )
                        self._ended.add(index)
                case lifecycle.OutputsUploaded():
                    await store.add_output_files(task_id, await asyncio.to_thread(self._outputs))
                case lifecycle.SystemFailure(reason=reason):
                    await store.transition(task_id, State.SYSTEM_ERROR, now=now, reason=reason)
        override = diagnose.overriding(task, pod)
        if override is not None and self._written is None:
            await store.transition(
                task_id,
                override.state,
                now=now,
                reason=override.line,
                metadata={"termination_reason": override.reason},
            )
            self._written = override.state
        elif is_terminal(progress.state) and self._written is None:
            await store.transition(task_id, progress.state, now=now)
            self._written = progress.state
        if self._written is not None or is_terminal(await store.state(task_id)):
            self._mark_recorded()

    def _mark_recorded(self) -> None:
        if not self.recorded:
            with contextlib.suppress(OSError):
                (Path(self.cfg.status_dir) / "recorded").touch()
            self.recorded = True


def rfc3339_now() -> str:
    from datetime import UTC, datetime

    return rfc3339(datetime.now(UTC))


def _phase(pod: dict[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


GRANT_PAUSE_FIRST = 0.2
GRANT_PAUSE_MAX = 2.0


async def follow(recorder: Recorder, api: PodApi, cfg: Config) -> None:
    """Reconcile every state of the Pod until its end is recorded or the Pod is gone."""
    deadline = time.monotonic() + cfg.grant_wait_seconds
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
        except ApiError as exc:
            if exc.status in (401, 403, 404) and time.monotonic() < deadline:
                # Just after the Pod starts: its grant (403), or the apiserver's view of the fresh
                # ServiceAccount behind the token (401), may not be there yet. Backing off keeps
                # a burst of new Pods from polling the apiserver hard while it catches up.
                await asyncio.sleep(pause)
                pause = min(pause * 1.5, GRANT_PAUSE_MAX)
                continue
            if exc.status in (401, 403, 404):
                log.warning("cannot read the Pod (%s): nothing more to record", exc)
                return
            if exc.status != 410:  # 410: the watch's version expired; start again from a GET
                log.warning("watching the Pod failed, retrying: %s", exc)
                await asyncio.sleep(1)
        except httpx.HTTPError as exc:
            log.warning("the Kubernetes API did not answer, retrying: %s", exc)
            await asyncio.sleep(1)


async def record(cfg: Config, store: SqlAlchemyTaskStore, api: PodApi, stopping: asyncio.Event) -> None:
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
            with contextlib.suppress(ApiError, httpx.HTTPError):
                await _reconcile(recorder, await api.pod(cfg.namespace, cfg.pod_name))
        else:
            following.result()
    finally:
        stopped.cancel()


async def run(cfg: Config) -> int:
    engine = create_engine(cfg.database_url, writer=True, pool_size=0)
    store = SqlAlchemyTaskStore(engine, reader=engine)
    api = PodApi(cfg.api_server, cfg.token_file, cfg.ca_file) if cfg.api_server else PodApi.in_cluster()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await record(cfg, store, api, stopping)
    finally:
        await api.aclose()
        await engine.dispose()
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
