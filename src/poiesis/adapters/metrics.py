"""Prometheus metrics of the API and the Task Controller.

Names follow Prometheus conventions (a `poiesis_` prefix, units in the name, `_total` on counters)
and every label has a bounded set of values: no task id, owner or URL is ever a label. The task
counts come from the database (kept by triggers, so every writer is counted: each API replica,
each task's recorder, tctl), read at most once per `cache_seconds` whatever the number of scrapers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from poiesis.domain.states import TERMINAL, State
from poiesis.domain.tes import Task
from poiesis.ports.cluster import Cluster, ClusterRefused, ClusterUnavailable
from poiesis.ports.store import StoreUnavailable, TaskStore

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A request's method becomes a label only when it is one of these: anything a client may send
# beyond them is `other`, so no request can add a series of its own.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
PASS_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0)


def _registry() -> CollectorRegistry:
    """A registry of this process's own: its metrics, and the process's CPU, memory, file
    descriptors and garbage collection."""
    registry = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


class _TaskCounts(Collector):
    """The stored tasks by state, as last read."""

    def __init__(self) -> None:
        self.counts: dict[State, int] | None = None

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        if self.counts is None:
            return
        stored = GaugeMetricFamily("poiesis_tasks", "Tasks stored, by state.", labels=["state"])
        for state in State:
            if state is not State.UNKNOWN:
                stored.add_metric([state.value], self.counts.get(state, 0))
        ended = CounterMetricFamily(
            "poiesis_tasks_ended", "Tasks that reached each terminal state.", labels=["state"]
        )
        for state in sorted(TERMINAL, key=lambda s: s.value):
            ended.add_metric([state.value], self.counts.get(state, 0))
        yield stored
        yield ended


class ApiMetrics:
    def __init__(
        self, store: TaskStore, cache_seconds: float = 5.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.registry = _registry()
        self._store = store
        self._cache_seconds = cache_seconds
        self._monotonic = monotonic
        self._read_at: float | None = None
        self._counts = _TaskCounts()
        self.registry.register(self._counts)
        self.requests = Histogram(
            "poiesis_http_request_duration_seconds",
            "HTTP requests by method, route template and status, and how long they took.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.created = Counter(
            "poiesis_tasks_created", "Tasks this API process accepted.", registry=self.registry
        )
        self.submits = Histogram(
            "poiesis_task_submit_duration_seconds",
            "From an accepted task to its objects made in the cluster (Kubernetes: the Job "
            "created and released), by outcome.",
            ["outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.count_errors = Counter(
            "poiesis_metrics_task_count_errors",
            "Scrapes that could not read the task counts (the last ones read are shown).",
            registry=self.registry,
        )

    def request(self, method: str, route: str | None, status: int, seconds: float) -> None:
        """One HTTP request; `route` is the matched route's template (None: no route matched)."""
        label = method if method in HTTP_METHODS else "other"
        self.requests.labels(label, route or "unmatched", str(status)).observe(seconds)

    async def exposition(self) -> bytes:
        now = self._monotonic()
        if self._read_at is None or now - self._read_at >= self._cache_seconds:
            try:
                self._counts.counts = await self._store.count_by_state()
                self._read_at = now
            except StoreUnavailable:
                self.count_errors.inc()
        return generate_latest(self.registry)


class TimedCluster:
    """The Cluster port, each submit timed into `ApiMetrics.submits`."""

    def __init__(self, cluster: Cluster, metrics: ApiMetrics) -> None:
        self._cluster = cluster
        self._metrics = metrics
        self.name = cluster.name

    async def submit(self, task: Task) -> None:
        started = time.perf_counter()
        outcome = "error"
        try:
            await self._cluster.submit(task)
            outcome = "ok"
        except ClusterUnavailable:
            outcome = "unavailable"
            raise
        except ClusterRefused:
            outcome = "refused"
            raise
        finally:
            self._metrics.submits.labels(outcome).observe(time.perf_counter() - started)

    async def cancel(self, task_id: str) -> bool:
        return await self._cluster.cancel(task_id)


class ControllerMetrics:
    """What the Task Controller does: leadership, its work queue, passes, actions, retries."""

    def __init__(self) -> None:
        self.registry = _registry()
        self.leader = Gauge(
            "poiesis_tctl_leader", "1 while this replica holds the Lease and acts.", registry=self.registry
        )
        self.queue_depth = Gauge(
            "poiesis_tctl_queue_depth", "Tasks waiting in the work queue.", registry=self.registry
        )
        self.passes = Histogram(
            "poiesis_tctl_reconcile_duration_seconds",
            "Reconcile passes over one task, by outcome, and how long they took.",
            ["outcome"],
            buckets=PASS_BUCKETS,
            registry=self.registry,
        )
        self.actions = Counter(
            "poiesis_tctl_actions", "Actions taken on tasks, by kind.", ["action"], registry=self.registry
        )
        self.errors = Counter(
            "poiesis_tctl_errors",
            "Passes that will be retried, by cause (the Kubernetes API or the database unavailable).",
            ["cause"],
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
