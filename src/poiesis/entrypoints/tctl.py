"""`poiesis tctl`: the Task Controller, run as 2-3 replicas of which the Lease holder acts.

Every replica keeps the Pod informer warm, so a new leader starts from a full cache; only the
leader reconciles. See `adapters.kubernetes.controller` for what it heals and
`adapters.kubernetes.diagnose` for how Kubernetes reasons map to task states.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket

from prometheus_client import start_http_server

from poiesis.adapters.kubernetes.cluster import KubernetesCluster, api_client
from poiesis.adapters.kubernetes.controller import Controller
from poiesis.adapters.kubernetes.lease import Elector, KubeLeases, LeaseTiming
from poiesis.adapters.kubernetes.objects import KubeTaskObjects
from poiesis.adapters.metrics import ControllerMetrics
from poiesis.adapters.sqlalchemy.engine import create_engine
from poiesis.adapters.sqlalchemy.store import SqlAlchemyTaskStore
from poiesis.entrypoints.settings import Settings

log = logging.getLogger("poiesis.tctl")


def identity() -> str:
    """This replica's name in the Lease: the Pod name in a cluster, else host and process id."""
    return os.environ.get("POIESIS_POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


async def run(settings: Settings, name: str | None = None) -> int:
    cfg = settings.tctl
    engine = create_engine(settings.database_url, writer=True, pool_size=cfg.workers + 2)
    store = SqlAlchemyTaskStore(engine, reader=engine)
    api = api_client(settings.kubeconfig)
    cluster = KubernetesCluster(api, settings.kubernetes, held=settings.caps.any)
    objects = KubeTaskObjects(cluster, api, admitted_elsewhere=bool(settings.kubernetes.kueue_queue))
    metrics = ControllerMetrics()
    controller = Controller(store, objects, cfg, metrics=metrics, caps=settings.caps)
    server = None
    if settings.metrics:
        # Prometheus's own server in a thread, on the `host` and `port` the API would use.
        server, _ = start_http_server(settings.port, settings.host, registry=metrics.registry)
        log.info("tctl metrics at http://%s:%d/metrics", settings.host, settings.port)
    timing = LeaseTiming(
        lease_seconds=cfg.lease_seconds,
        renew_deadline_seconds=cfg.renew_deadline_seconds,
        retry_seconds=cfg.retry_seconds,
    )
    elector = Elector(KubeLeases(api, cluster.namespace, cfg.lease_name), name or identity(), timing)
    loop = asyncio.get_running_loop()

    def notify(task_id: str) -> None:
        loop.call_soon_threadsafe(controller.notice, task_id)

    objects.start(notify)
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    log.info("tctl %s: watching namespace %s", elector.identity, cluster.namespace)
    electing = asyncio.create_task(elector.run(controller.run))
    stopped = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({electing, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if electing.done():
            electing.result()
    finally:
        electing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await electing
        stopped.cancel()
        if elector.leading or elector.terms:
            await elector.release()
        objects.stop()
        await engine.dispose()
        cluster.stop()
        if server is not None:
            server.shutdown()
    return 0
