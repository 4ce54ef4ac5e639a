"""The composition root of the API process: the only place that names concrete adapters.

Nothing is built at import time. The Litestar lifespan initialises the container's resources (the
database engines, migrations) on start and shuts them down on stop.
"""

from __future__ import annotations

import logging
import os
import posixpath
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from dependency_injector import containers, providers
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from poiesis import __version__
from poiesis.adapters.clock import SystemClock
from poiesis.adapters.metrics import ApiMetrics, TimedCluster
from poiesis.adapters.sqlalchemy.direct import DirectPostgres
from poiesis.adapters.sqlalchemy.engine import create_engine, is_sqlite, migrate
from poiesis.adapters.sqlalchemy.store import SqlAlchemyTaskStore
from poiesis.adapters.sqlalchemy.threaded import ThreadedSqlite
from poiesis.adapters.unattached import UnattachedCluster
from poiesis.domain.areas import Area
from poiesis.domain.fairness import CreateRate
from poiesis.domain.staging import SCHEMES
from poiesis.domain.submission import Rules
from poiesis.domain.tes import Organization, ServiceInfo, ServiceType
from poiesis.entrypoints.access import Access
from poiesis.entrypoints.settings import Settings
from poiesis.ports.auth import Authenticator
from poiesis.ports.cluster import Cluster
from poiesis.ports.store import TaskStore
from poiesis.services.staging import Stager
from poiesis.services.tasks import TaskService

log = logging.getLogger("poiesis")


async def _writer(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings.database_url, writer=True, pool_size=settings.database_pool_size)
    if is_sqlite(settings.database_url):
        database = make_url(settings.database_url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
    if settings.migrate_on_start:
        await migrate(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


async def _reader(settings: Settings, writer: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    if not is_sqlite(settings.database_url):
        yield writer  # PostgreSQL readers never wait for writers: one pool serves both
        return
    engine = create_engine(settings.database_url, writer=False)
    try:
        yield engine
    finally:
        await engine.dispose()


async def _direct(settings: Settings) -> AsyncIterator[DirectPostgres | None]:
    if is_sqlite(settings.database_url):
        yield None
        return
    direct = DirectPostgres(settings.database_url, size=settings.database_pool_size)
    try:
        yield direct
    finally:
        await direct.close()


async def _threads(settings: Settings) -> AsyncIterator[ThreadedSqlite | None]:
    if not is_sqlite(settings.database_url):
        yield None
        return
    threads = ThreadedSqlite(settings.database_url)
    try:
        yield threads
    finally:
        await threads.close()


def _file_areas(settings: Settings) -> tuple[Area, ...]:
    """Where file URLs may point: the shared volumes on Kubernetes, else `file_roots` (as given and
    with their links resolved; the filers check each file's real path again)."""
    if settings.backend == "kubernetes":
        return settings.kubernetes.areas
    roots = {posixpath.normpath(r) for r in settings.file_roots} | {
        os.path.realpath(r) for r in settings.file_roots
    }
    return tuple(Area(path=r) for r in sorted(roots))


def _rules(settings: Settings) -> Rules:
    # The caps (max_*) are settings of the same name; the rest is derived.
    caps = {name: getattr(settings, name) for name in Rules.__struct_fields__ if name.startswith("max_")}
    # The mapped keys count only where they are honoured: on Kubernetes.
    mapped = settings.kubernetes.parameters if settings.backend == "kubernetes" else {}
    return Rules(
        backend_parameters=frozenset(k.lower() for k in settings.backend_parameters) | frozenset(mapped),
        parameters=mapped,
        url_schemes=SCHEMES,
        file_areas=_file_areas(settings),
        **caps,
    )


async def _kubernetes(settings: Settings) -> AsyncIterator[Cluster]:
    from poiesis.adapters.kubernetes.cluster import KubernetesCluster, api_client

    api = api_client(settings.kubeconfig)
    cluster = KubernetesCluster(api, settings.kubernetes, held=settings.caps.any)
    cluster.start()
    log.info(
        "kubernetes backend: task Jobs in namespace %s%s",
        settings.kubernetes.namespace,
        "; tasks are held QUEUED until tctl releases them under the caps on tasks in flight"
        if settings.caps.any
        else "",
    )
    try:
        yield cluster
    finally:
        cluster.stop()


async def _cluster(settings: Settings, store: TaskStore, clock: SystemClock) -> AsyncIterator[Cluster]:
    if settings.backend == "kubernetes":
        async for cluster in _kubernetes(settings):
            yield cluster
        return
    if settings.backend != "local":
        yield UnattachedCluster()
        return
    from poiesis.adapters.local.cluster import LocalCluster
    from poiesis.adapters.local.limits import CgroupLimits
    from poiesis.adapters.local.sandbox import choose
    from poiesis.entrypoints.filer import router

    storage = router(settings)
    runtime = choose(
        settings.local_runtime,
        uid=settings.local_sandbox_uid,
        host_network=settings.local_network == "host",
        max_processes=settings.local_max_processes,
    )
    cluster = LocalCluster(
        store=store,
        stager=Stager(storage, parallel=settings.filer_parallel),
        runtime=runtime,
        limits=None if runtime.uses_images else CgroupLimits.detect(settings.local_max_processes),
        reconcile_seconds=settings.local_reconcile_seconds,
        clock=clock,
        workspaces=settings.local_workspaces,
        max_tasks=min(settings.local_max_tasks, settings.max_active_tasks or settings.local_max_tasks),
        max_tasks_per_owner=settings.caps.per_owner,
        tail_bytes=settings.executor_log_tail_bytes,
        keep_workspaces=settings.keep_workspaces,
    )
    log.info(
        "local backend: executors run with %s, %d task(s) at once%s; limits enforced: %s; %s",
        cluster.runtime.name,
        cluster.max_tasks,
        f", {settings.max_active_tasks_per_user} per user" if settings.max_active_tasks_per_user else "",
        cluster.enforced,
        cluster.network,
    )
    await cluster.start()
    try:
        yield cluster
    finally:
        await cluster.stop()
        await storage.aclose()


async def _access(settings: Settings) -> AsyncIterator[Access]:
    methods = set(settings.auth) - {"none"}
    qualify = len(methods) > 1  # one namespace of owners per method, so names cannot collide
    authenticators: list[Authenticator] = []
    http: httpx.AsyncClient | None = None
    if "oidc" in methods:
        from poiesis.adapters.auth.oidc import OidcAuthenticator

        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=settings.oidc_ca_file) if settings.oidc_ca_file else True
        )
        http = httpx.AsyncClient(timeout=httpx.Timeout(5.0), follow_redirects=False, verify=verify)
        authenticators.append(
            OidcAuthenticator(
                settings.oidc,
                http=http,
                leeway_seconds=settings.oidc_leeway_seconds,
                jwks_cache_seconds=settings.oidc_jwks_cache_seconds,
                jwks_refresh_seconds=settings.oidc_jwks_refresh_seconds,
                qualify=qualify,
            )
        )
    if "basic" in methods:
        from poiesis.adapters.auth.basic import BasicAuthenticator

        authenticators.append(
            BasicAuthenticator(
                Path(settings.basic_users_file),
                admins=frozenset(settings.basic_admins),
                qualify=qualify,
                cache_seconds=settings.basic_cache_seconds,
            )
        )
    log.info("authentication: %s", ", ".join(a.scheme for a in authenticators) or "off")
    try:
        yield Access(authenticators)
    finally:
        if http is not None:
            await http.aclose()


def _backend(settings: Settings, cluster: Cluster) -> str:
    runtime = getattr(cluster, "runtime", None)
    if runtime is None:
        return cluster.name
    enforced = getattr(cluster, "enforced", "")
    network = getattr(cluster, "network", "")
    return f"{cluster.name}, executors run with {runtime.name}; limits enforced: {enforced}; {network}"


def _metrics(settings: Settings, store: TaskStore, cluster: Cluster) -> ApiMetrics:
    metrics = ApiMetrics(store, cache_seconds=settings.metrics_cache_seconds)
    load = getattr(cluster, "load", None)
    # The local backend; its ended tasks are timed (a read of each) only while metrics are served.
    if settings.metrics and load is not None and hasattr(cluster, "on_end"):
        metrics.watch_local(load)
        cluster.on_end = metrics.task_ended
    return metrics


def _service_info(settings: Settings, cluster: Cluster) -> ServiceInfo:
    return ServiceInfo(
        id=settings.service_id,
        name=settings.service_name,
        type=ServiceType(group="org.ga4gh", artifact="tes", version="1.1.0"),
        organization=Organization(name=settings.organization_name, url=settings.organization_url),
        version=__version__,
        description=f"{settings.service_description} (backend: {_backend(settings, cluster)})",
        contact_url=settings.contact_url,
        documentation_url=settings.documentation_url,
        environment=settings.environment,
        storage=settings.storage,
        tes_resources_backend_parameters=_supported_parameters(settings),
        backend_parameters=dict(settings.kubernetes.backend_parameters) or None
        if settings.backend == "kubernetes"
        else None,
    )


def _tasks(
    settings: Settings,
    store: TaskStore,
    cluster: Cluster,
    clock: SystemClock,
    rules: Rules,
    metrics: ApiMetrics,
) -> TaskService:
    return TaskService(
        store=store,
        cluster=cluster,
        clock=clock,
        rules=rules,
        rate=CreateRate(settings.create_rate_per_user, settings.create_burst_per_user),
        on_rate_limited=metrics.rate_limited.inc,
    )


def _supported_parameters(settings: Settings) -> list[str] | None:
    keys = list(settings.backend_parameters)
    if settings.backend == "kubernetes":
        keys += [
            k for k in settings.kubernetes.backend_parameters if k.lower() not in {x.lower() for x in keys}
        ]
    return keys


class ApiContainer(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=Settings)
    clock = providers.Singleton(SystemClock)
    writer = providers.Resource(_writer, settings)
    reader = providers.Resource(_reader, settings, writer)
    direct = providers.Resource(_direct, settings)
    threads = providers.Resource(_threads, settings)
    store = providers.Singleton(SqlAlchemyTaskStore, writer, reader=reader, direct=direct, threads=threads)
    cluster = providers.Resource(_cluster, settings, store, clock)
    rules = providers.Callable(_rules, settings)
    service_info = providers.Singleton(_service_info, settings, cluster)
    access = providers.Resource(_access, settings)
    metrics = providers.Singleton(_metrics, settings, store, cluster)
    timed_cluster = providers.Singleton(TimedCluster, cluster, metrics)
    tasks = providers.Singleton(_tasks, settings, store, timed_cluster, clock, rules, metrics)
