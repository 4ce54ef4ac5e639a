"""Prometheus metrics of the API and the Task Controller.

Names follow Prometheus conventions (a `poiesis_` prefix, units in the name, `_total` on counters)
and every label has a bounded set of values: no task id, owner or URL is ever a label. The task
counts come from the database (kept by triggers, so every writer is counted: each API replica,
each task's recorder, tctl), read at most once per `cache_seconds` whatever the number of scrapers.
"""

from __future__ import annotations

import time
from collections import OrderedDict
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
from poiesis.domain.tes import Task, View
from poiesis.domain.times import parse_time
from poiesis.ports.cluster import Cluster, ClusterRefused, ClusterUnavailable
from poiesis.ports.store import StoreUnavailable, TaskStore, Transition

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A request's method becomes a label only when it is one of these: anything a client may send
# beyond them is `other`, so no request can add a series of its own.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
PASS_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0)
STATE_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)


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


def state_durations(creation_time: str, history: list[Transition]) -> list[tuple[State, float]]:
    """How long a task held each state it left: from its creation (QUEUED) or the transition into a
    state to the transition out of it, in seconds."""
    entered = parse_time(creation_time)
    held = []
    for transition in history:
        at = transition.at
        held.append((transition.source, max(0.0, (at - entered).total_seconds())))
        entered = at
    return held


class StateTimes:
    """`poiesis_task_state_duration_seconds`: the time each ended task spent in each state, observed
    once per task from its stored history by the process that sees it end (the local backend; the
    tctl leader for Kubernetes)."""

    def __init__(self, registry: CollectorRegistry, remember: int = 10_000) -> None:
        self.histogram = Histogram(
            "poiesis_task_state_duration_seconds",
            "Time ended tasks spent in each state they passed through (QUEUED from creation).",
            ["state"],
            buckets=STATE_BUCKETS,
            registry=registry,
        )
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._remember = remember

    async def observe(self, store: TaskStore, task_id: str, *, creation_time: str | None = None) -> None:
        """Once per task; `creation_time` of a task known to have ended saves reading it."""
        if task_id in self._seen:
            return
        if creation_time is None:
            task = await store.get(task_id, view=View.BASIC)
            if task.state not in TERMINAL:
                return
            creation_time = task.creation_time
        for state, seconds in state_durations(creation_time, await store.history(task_id)):
            self.histogram.labels(state.value).observe(seconds)
        self._seen[task_id] = None
        while len(self._seen) > self._remember:
            self._seen.popitem(last=False)


class _LocalLoad(Collector):
    """The local backend's tasks: running (holding one of its slots) and waiting for one."""

    def __init__(self, load: Callable[[], tuple[int, int, int]]) -> None:
        self._load = load

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        running, waiting, slots = self._load()
        tasks = GaugeMetricFamily(
            "poiesis_local_tasks",
            "Tasks in this process's local backend, running or waiting for a slot.",
            labels=["phase"],
        )
        tasks.add_metric(["running"], running)
        tasks.add_metric(["waiting"], waiting)
        yield tasks
        yield GaugeMetricFamily("poiesis_local_slots", "Tasks the local backend runs at once.", value=slots)


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
        self.rate_limited = Counter(
            "poiesis_tasks_rate_limited",
            "Creates refused (429) because their user went past create_rate_per_user.",
            registry=self.registry,
        )
        self.submits = Histogram(
            "poiesis_task_submit_duration_seconds",
            "From an accepted task to its objects made in the cluster (Kubernetes: the Job "
            "created and released), by outcome.",
            ["outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.cluster_errors = Counter(
            "poiesis_cluster_errors",
            "Calls to the cluster (Kubernetes API) that failed, by operation and cause.",
            ["operation", "cause"],
            registry=self.registry,
        )
        self.state_times = StateTimes(self.registry)
        self.count_errors = Counter(
            "poiesis_metrics_task_count_errors",
            "Scrapes that could not read the task counts (the last ones read are shown).",
            registry=self.registry,
        )

    def watch_local(self, load: Callable[[], tuple[int, int, int]]) -> None:
        """Report the local backend's load (running, waiting, slots) at each scrape."""
        self.registry.register(_LocalLoad(load))

    async def task_ended(self, task_id: str) -> None:
        await self.state_times.observe(self._store, task_id)

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
            if outcome != "ok":
                self._metrics.cluster_errors.labels("submit", outcome).inc()

    async def cancel(self, task_id: str) -> bool:
        try:
            return await self._cluster.cancel(task_id)
        except ClusterUnavailable:
            self._metrics.cluster_errors.labels("cancel", "unavailable").inc()
            raise
        except Exception:
            self._metrics.cluster_errors.labels("cancel", "error").inc()
            raise


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
        self.held = Gauge(
            "poiesis_tctl_tasks_held",
            "Tasks held QUEUED by the caps on tasks in flight (max_active_tasks_per_user, "
            "max_active_tasks), as the leader's last pass counted them.",
            registry=self.registry,
        )
        self.state_times = StateTimes(self.registry)
        self.errors = Counter(
            "poiesis_tctl_errors",
            "Passes that will be retried, by cause (the Kubernetes API or the database unavailable).",
            ["cause"],
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
