"""Run `poiesis trec` as a local process for each task Pod of a namespace (kwok runs no containers).

Each recorder gets what the real sidecar gets: its Pod's name and namespace, the database URL, and
an API token bound to the task's ServiceAccount (a TokenRequest), written into a kubeconfig.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.support.measure import wait_sampling

TASK_LABEL = "poiesis.io/task"


def api_endpoint(admin_kubeconfig: str, work: Path) -> tuple[str, str | None]:
    """(server URL, CA file) of the cluster a kubeconfig points at."""
    import base64

    cluster = yaml.safe_load(Path(admin_kubeconfig).read_text())["clusters"][0]["cluster"]
    ca = cluster.get("certificate-authority")
    if cluster.get("certificate-authority-data"):
        ca_path = work / "ca.crt"
        ca_path.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
        ca = str(ca_path)
    return cluster["server"], ca


def token_kubeconfig(admin_kubeconfig: str, token: str, path: Path) -> Path:
    admin = yaml.safe_load(Path(admin_kubeconfig).read_text())
    cluster = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def service_account_token(core: Any, namespace: str, account: str) -> str:
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    return str(core.create_namespaced_service_account_token(account, namespace, request).status.token)


class Recorders:
    """Starts one recorder per new task Pod, at most `limit` at once; keeps their logs in `work`."""

    def __init__(
        self,
        api: client.ApiClient,
        kubeconfig: str,
        namespace: str,
        database_url: str,
        work: Path,
        *,
        limit: int = 24,
    ) -> None:
        self.core: Any = client.CoreV1Api(api)
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.database_url = database_url
        self.work = work
        self.slots = threading.Semaphore(limit)
        self.stopped = threading.Event()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.started: list[str] = []
        self.spawned: dict[str, float] = {}
        """Pod name -> time.time() when its recorder was started."""
        self.peak_rss: dict[str, int] = {}
        """Pod name -> the recorder's peak RSS in bytes, once it has exited."""
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> Recorders:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        for process in list(self.processes.values()):
            if process.poll() is None:
                process.terminate()
        for process in list(self.processes.values()):
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()

    def env_for(self, pod_name: str, task_id: str) -> dict[str, str]:
        token = service_account_token(self.core, self.namespace, f"tes-{task_id}")
        home = self.work / pod_name
        (home / "status").mkdir(parents=True, exist_ok=True)
        (home / "volume").mkdir(exist_ok=True)
        (home / "token").write_text(token)
        server, ca = api_endpoint(self.kubeconfig, home)
        return {
            "POIESIS_TREC_API_SERVER": server,
            "POIESIS_TREC_TOKEN_FILE": str(home / "token"),
            "POIESIS_TREC_CA_FILE": ca or "",
            "POIESIS_TASK_ID": task_id,
            "POIESIS_POD_NAME": pod_name,
            "POIESIS_POD_NAMESPACE": self.namespace,
            "POIESIS_DATABASE_URL": self.database_url,
            "POIESIS_TREC_STATUS_DIR": str(home / "status"),
            "POIESIS_TREC_VOLUME": str(home / "volume"),
            "POIESIS_LOG_FORMAT": "text",
        }

    def start(self, pod_name: str, task_id: str) -> subprocess.Popen[bytes]:
        env = self.env_for(pod_name, task_id)
        with (self.work / pod_name / "trec.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "poiesis.entrypoints.cli", "trec"],
                env=os.environ | env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.spawned[pod_name] = time.time()
        self.processes[pod_name] = process
        self.started.append(pod_name)
        return process

    def _run(self, pod_name: str, task_id: str) -> None:
        with self.slots:
            if self.stopped.is_set():
                return
            try:
                process = self.start(pod_name, task_id)
            except ApiException as exc:
                if exc.status == 404:
                    return  # the task's objects are gone already (cancelled, or cleaned up)
                raise
            try:
                process.returncode, peak = wait_sampling(process.pid)
            except ChildProcessError:
                return  # reaped by __exit__ (Popen.poll/wait) while stopping
            self.peak_rss[pod_name] = peak

    def _watch(self) -> None:
        seen: set[str] = set()
        while not self.stopped.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    self.core.list_namespaced_pod,
                    self.namespace,
                    label_selector=TASK_LABEL,
                    timeout_seconds=5,
                ):
                    pod = event["object"]
                    name = pod.metadata.name
                    if self.stopped.is_set():
                        break
                    if event["type"] == "ADDED" and name not in seen:
                        seen.add(name)
                        task_id = pod.metadata.labels[TASK_LABEL]
                        threading.Thread(target=self._run, args=(name, task_id), daemon=True).start()
                    if self.stopped.is_set():
                        break
            except Exception:  # noqa: BLE001 (a dropped watch is reopened)
                self.stopped.wait(0.5)
            finally:
                stream.stop()


class InProcessRecorders:
    """One recorder per task Pod like `Recorders`, but as coroutines of this process sharing one
    database pool: for hundreds of Pods at once on a two-core machine, where a process per Pod
    (each on its own node in a real cluster) would measure the machine, not Poiesis. Each still
    reads its Pod with a token bound to its task's own ServiceAccount."""

    def __init__(
        self, api: client.ApiClient, kubeconfig: str, namespace: str, database_url: str, work: Path
    ) -> None:
        self.helper = Recorders(api, kubeconfig, namespace, database_url, work)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.watcher = threading.Thread(target=self._watch, daemon=True)
        self.stopping: asyncio.Event | None = None
        self.failures: list[BaseException] = []

    def __enter__(self) -> InProcessRecorders:
        from poiesis.adapters.postgres.records import PostgresTaskRecords

        self.thread.start()

        async def setup() -> None:
            self.stopping = asyncio.Event()
            self.store = PostgresTaskRecords(self.helper.database_url)

        asyncio.run_coroutine_threadsafe(setup(), self.loop).result()
        self.watcher.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.helper.stopped.set()

        async def teardown() -> None:
            assert self.stopping is not None
            self.stopping.set()
            pending = asyncio.all_tasks() - {asyncio.current_task()}
            if pending:
                _, late = await asyncio.wait(pending, timeout=15)
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(teardown(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.watcher.join(10)
        self.loop.close()

    async def _record(self, pod_name: str, task_id: str) -> None:
        from poiesis.adapters.kubernetes.podapi import PodApi
        from poiesis.entrypoints.trec import config_from_env, record

        try:
            env = await asyncio.to_thread(self.helper.env_for, pod_name, task_id)
        except ApiException as exc:
            if exc.status != 404:  # 404: the task's objects are gone already
                self.failures.append(exc)
            return
        cfg = config_from_env(env | {"POIESIS_DATABASE_URL": self.helper.database_url})
        api = PodApi(cfg.api_server or "", cfg.token_file, cfg.ca_file)
        try:
            assert self.stopping is not None
            await record(cfg, self.store, api, self.stopping)
        except BaseException as exc:  # noqa: BLE001 (kept for the test to report)
            self.failures.append(exc)
        finally:
            await api.aclose()

    def _watch(self) -> None:
        seen: set[str] = set()
        core = self.helper.core
        while not self.helper.stopped.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    core.list_namespaced_pod,
                    self.helper.namespace,
                    label_selector=TASK_LABEL,
                    timeout_seconds=5,
                ):
                    pod = event["object"]
                    if event["type"] == "ADDED" and pod.metadata.name not in seen:
                        seen.add(pod.metadata.name)
                        coro = self._record(pod.metadata.name, pod.metadata.labels[TASK_LABEL])
                        asyncio.run_coroutine_threadsafe(coro, self.loop)
                    if self.helper.stopped.is_set():
                        break
            except Exception:  # noqa: BLE001 (a dropped watch is reopened)
                self.helper.stopped.wait(0.5)
            finally:
                stream.stop()
