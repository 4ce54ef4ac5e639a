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
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import urllib3
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from poiesis.adapters.kubernetes import observe
from poiesis.adapters.kubernetes.cluster import api_client
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
    kubeconfig: str | None = None
    """None: the in-cluster token mounted into this container."""
    volume: str = VOLUME_ROOT
    status_dir: str = STATUS_DIR
    tail_bytes: int = 64 * 1024
    grant_wait_seconds: float = 120.0


def _iso(value: Any) -> str:
    return value if isinstance(value, str) else rfc3339(value)


class Recorder:
    def __init__(self, cfg: Config, store: SqlAlchemyTaskStore, core: Any) -> None:
        self.cfg = cfg
        self.store = store
        self.core = core
        self.task: Task | None = None
        self._ended: set[int] = set()
        self._written: State | None = None
        self.recorded = False

    def _tail(self, index: int) -> tuple[str, str]:
        prefix = Path(self.cfg.status_dir) / f"executor-{index}"
        limit = self.cfg.tail_bytes
        try:
            out = prefix.with_suffix(".stdout").read_bytes()[-limit:]
            err = prefix.with_suffix(".stderr").read_bytes()[-limit:]
            return out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        except OSError:
            pass
        try:
            text = self.core.read_namespaced_pod_log(
                self.cfg.pod_name, self.cfg.namespace, container=f"executor-{index}", limit_bytes=limit
            )
        except ApiException as exc:
            log.warning("reading executor %d's log failed: %s", index, exc.reason)
            text = ""
        return text[-limit:] if isinstance(text, str) else "", ""

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
                        out, err = await asyncio.to_thread(self._tail, index)
                        await store.record_executor(
                            task_id, index, end_time=_iso(at), exit_code=code, stdout=out, stderr=err
                        )
                        self._ended.add(index)
                case lifecycle.OutputsUploaded():
                    await store.add_output_files(task_id, await asyncio.to_thread(self._outputs))
                case lifecycle.SystemFailure(reason=reason):
                    if await store.transition(task_id, State.SYSTEM_ERROR, now=now):
                        await store.append_system_log(task_id, reason)
        if is_terminal(progress.state) and self._written is None:
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


def _pod_events(
    core: Any,
    cfg: Config,
    stop: threading.Event,
    loop: asyncio.AbstractEventLoop,
    queue: asyncio.Queue[dict[str, Any] | None],
) -> None:
    """Feed the Pod's states into `queue` (in a thread): a first GET, then a watch, reconnecting."""
    api = core.api_client
    deadline = time.monotonic() + cfg.grant_wait_seconds
    version = None
    while not stop.is_set():
        try:
            pod = core.read_namespaced_pod(cfg.pod_name, cfg.namespace)
            version = pod.metadata.resource_version
            loop.call_soon_threadsafe(queue.put_nowait, api.sanitize_for_serialization(pod))
            stream = watch.Watch()
            for event in stream.stream(
                core.list_namespaced_pod,
                cfg.namespace,
                field_selector=f"metadata.name={cfg.pod_name}",
                resource_version=version,
                timeout_seconds=60,
            ):
                if stop.is_set():
                    stream.stop()
                    break
                if event["type"] in ("ADDED", "MODIFIED"):
                    loop.call_soon_threadsafe(
                        queue.put_nowait, api.sanitize_for_serialization(event["object"])
                    )
                elif event["type"] == "DELETED":
                    loop.call_soon_threadsafe(queue.put_nowait, None)
                    return
        except ApiException as exc:
            if exc.status in (403, 404) and time.monotonic() < deadline:
                stop.wait(0.2)  # the grant (or the Pod) is not there yet
                continue
            if exc.status == 404:
                loop.call_soon_threadsafe(queue.put_nowait, None)
                return
            log.warning("watching the Pod failed, retrying: %s", exc.reason)
            stop.wait(1)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            log.warning("watching the Pod failed, retrying: %s", exc)
            stop.wait(1)


async def run(cfg: Config) -> int:
    engine = create_engine(cfg.database_url, writer=True, pool_size=0)
    store = SqlAlchemyTaskStore(engine, reader=engine)
    api = api_client(cfg.kubeconfig)
    core: Any = client.CoreV1Api(api)
    recorder = Recorder(cfg, store, core)
    stopping = asyncio.Event()
    stop = threading.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    feeder = threading.Thread(target=_pod_events, args=(core, cfg, stop, loop, queue), daemon=True)
    feeder.start()
    latest: dict[str, Any] | None = None
    try:
        while not stopping.is_set():
            getter = asyncio.ensure_future(queue.get())
            stopper = asyncio.ensure_future(stopping.wait())
            done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if getter not in done:
                getter.cancel()
                break
            pod = getter.result()
            while not queue.empty():  # only the newest state matters
                pod = queue.get_nowait()
            if pod is None:
                break
            latest = pod
            await _reconcile(recorder, pod)
            phase = (pod.get("status") or {}).get("phase")
            if recorder.recorded and phase in ("Succeeded", "Failed"):
                break
        if latest is not None and not recorder.recorded:
            # Stopping (the Pod ends, say): one last look at the Pod as it is now.
            try:
                fresh = await asyncio.to_thread(core.read_namespaced_pod, cfg.pod_name, cfg.namespace)
                await _reconcile(recorder, api.sanitize_for_serialization(fresh))
            except ApiException:
                pass
    finally:
        stop.set()
        await engine.dispose()
        api.close()
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
        kubeconfig=env.get("POIESIS_TREC_KUBECONFIG"),
        volume=env.get("POIESIS_TREC_VOLUME", VOLUME_ROOT),
        status_dir=env.get("POIESIS_TREC_STATUS_DIR", STATUS_DIR),
        tail_bytes=int(env.get("POIESIS_EXECUTOR_LOG_TAIL_BYTES", 64 * 1024)),
    )
