"""Prometheus metrics: go-work's per-execution series plus gauges read from the Rust core."""

from __future__ import annotations

import logging
import re
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar, cast

from workhorse.adapters._wrap import final_status
from workhorse.adapters.keys import REQUEST_SIZE, RESPONSE_SIZE
from workhorse.job import Job
from workhorse.middleware import Adapter, Handler, is_async_handler

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter
    from prometheus_client.metrics_core import Metric

__all__ = ["CoreCollector", "prometheus", "register_core_collector"]

logger = logging.getLogger("workhorse")
_T = TypeVar("_T")

_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_PREFIX = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_SIZE_BUCKETS = tuple(float(64 * 4**i) for i in range(12))  # 64 B .. 256 MiB

# Metric objects per registry and (namespace, subsystem): a second adapter on the same registry
# reuses them instead of failing with a duplicate-timeseries error.
_lock = threading.Lock()
_series: weakref.WeakKeyDictionary[CollectorRegistry, dict[tuple[str, str], _Series]] = (
    weakref.WeakKeyDictionary()
)
_collectors: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, CoreCollector]] = (
    weakref.WeakKeyDictionary()
)


def _registry(registry: CollectorRegistry | None) -> CollectorRegistry:
    try:
        import prometheus_client
    except ImportError as exc:  # pragma: no cover - depends on the environment
        hint = "prometheus metrics need prometheus-client: pip install workhorse[prometheus]"
        raise ImportError(hint) from exc
    return prometheus_client.REGISTRY if registry is None else registry


def _name(*parts: str) -> str:
    return "_".join(part for part in parts if part)


def _check_prefix(what: str, value: str) -> str:
    # prometheus_client accepts UTF-8 names now; classic names keep every query simple.
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if value and not _PREFIX.fullmatch(value):
        raise ValueError(f"{what} must match [a-zA-Z_][a-zA-Z0-9_]*, got {value!r}")
    return value


class _Series:
    """The metric objects of one (registry, namespace, subsystem)."""

    def __init__(self, registry: CollectorRegistry, namespace: str, subsystem: str) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        ns, sub = namespace, subsystem
        self.requests = Counter(
            "requests_total",
            "Executions by final status code.",
            ["code", "handler"],
            namespace=ns,
            subsystem=sub,
            registry=registry,
        )
        self.duration = Histogram(
            "request_duration_seconds",
            "Execution latency in seconds.",
            ["handler"],
            namespace=ns,
            subsystem=sub,
            registry=registry,
            buckets=_DURATION_BUCKETS,
        )
        self.request_size = Histogram(
            "request_size_bytes",
            "Request sizes the handlers reported, in bytes.",
            ["handler"],
            namespace=ns,
            subsystem=sub,
            registry=registry,
            buckets=_SIZE_BUCKETS,
        )
        self.response_size = Histogram(
            "response_size_bytes",
            "Response sizes the handlers reported, in bytes.",
            ["handler"],
            namespace=ns,
            subsystem=sub,
            registry=registry,
            buckets=_SIZE_BUCKETS,
        )
        self.in_flight = Gauge(
            "in_flight",
            "Executions running now.",
            ["handler"],
            namespace=ns,
            subsystem=sub,
            registry=registry,
        )
        self._handlers: dict[str, _HandlerSeries] = {}

    def of(self, handler: str) -> _HandlerSeries:
        """The labelled children of one handler name, created once."""
        children = self._handlers.get(handler)
        if children is None:
            with _lock:
                children = self._handlers.get(handler)
                if children is None:
                    children = self._handlers[handler] = _HandlerSeries(self, handler)
        return children


class _HandlerSeries:
    """Children of every series for one handler, so a job pays no .labels() lookup."""

    __slots__ = (
        "_requests",
        "_name",
        "codes",
        "duration",
        "request_size",
        "response_size",
        "in_flight",
    )

    def __init__(self, series: _Series, handler: str) -> None:
        self._requests = series.requests
        self._name = handler
        self.codes: dict[int, Counter] = {}
        self.duration = series.duration.labels(handler)
        self.request_size = series.request_size.labels(handler)
        self.response_size = series.response_size.labels(handler)
        self.in_flight = series.in_flight.labels(handler)

    def finish(self, job: Job, started: float, raised: BaseException | None) -> None:
        self.duration.observe(time.perf_counter() - started)
        self.in_flight.dec()
        status = job.ctx.status if raised is None else final_status(job, raised)
        counter = self.codes.get(status)  # Status hashes as its int: no conversion per job
        if counter is None:
            code = int(status)
            counter = self.codes.setdefault(code, self._requests.labels(str(code), self._name))
        counter.inc()
        ctx = job.ctx
        size = ctx.get(REQUEST_SIZE)
        if isinstance(size, (int, float)) and not isinstance(size, bool):
            self.request_size.observe(size)
        size = ctx.get(RESPONSE_SIZE)
        if isinstance(size, (int, float)) and not isinstance(size, bool):
            self.response_size.observe(size)


def prometheus(
    *,
    registry: CollectorRegistry | None = None,
    namespace: str = "workhorse",
    subsystem: str = "",
    ignore: Iterable[str] = (),
) -> Adapter:
    """Adapter recording requests_total, request_duration_seconds, sizes and in_flight."""
    if isinstance(ignore, str):
        raise TypeError("ignore must be a collection of handler names, not a str")
    ignored = frozenset(ignore)
    _check_prefix("namespace", namespace)
    _check_prefix("subsystem", subsystem)
    registry = _registry(registry)
    with _lock:
        by_name = _series.setdefault(registry, {})
        series = by_name.get((namespace, subsystem))
        if series is None:
            series = by_name[(namespace, subsystem)] = _Series(registry, namespace, subsystem)

    def adapter(handler: Handler) -> Handler:
        # Written out rather than through _wrap.around: this runs on every job of a benchmark.
        if is_async_handler(handler):
            async_handler = cast(Callable[[Job], Awaitable[object]], handler)

            async def measured_async(job: Job) -> object:
                if job.handler in ignored:
                    return await async_handler(job)
                children = series.of(job.handler)
                children.in_flight.inc()
                started = time.perf_counter()
                try:
                    result = await async_handler(job)
                except BaseException as exc:
                    children.finish(job, started, exc)
                    raise
                children.finish(job, started, None)
                return result

            return measured_async

        def measured(job: Job) -> object:
            if job.handler in ignored:
                return handler(job)
            children = series.of(job.handler)
            children.in_flight.inc()
            started = time.perf_counter()
            try:
                result = handler(job)
            except BaseException as exc:
                children.finish(job, started, exc)
                raise
            children.finish(job, started, None)
            return result

        return measured

    return adapter


# figures() key -> (gauge name after "<ns>_core_", help)
_CORE_GAUGES = {
    "scheduled": ("scheduled_timers", "Timers armed in the core."),
    "ready": ("ready_queue_depth", "Executions admitted and waiting for Python."),
    "due": ("due_queue_depth", "Executions due and waiting for a concurrency permit."),
    "in_flight": ("permits_in_use", "Concurrency permits held by running executions."),
    "permits": ("permits", "Concurrency permits of the worker."),
    "interval_lateness_seconds_max": (
        "interval_lateness_seconds_max",
        "Largest lateness of an interval tick, in seconds.",
    ),
}

WorkerFigures = Callable[[], Iterable[tuple[str, dict[str, float]]]]
JobFigures = Callable[[], Iterable[tuple[str, int]]]


def _live_worker_figures() -> Iterator[tuple[str, dict[str, float]]]:
    """(name, figures) of every live Worker in this process."""
    from workhorse.worker import live_workers

    for worker in live_workers():
        try:
            figures = worker.figures()
        except Exception:  # noqa: BLE001 - a worker stopping mid-scrape is simply left out
            continue
        yield worker.name, figures


def _live_concurrent_job_figures() -> Iterator[tuple[str, int]]:
    """(name, running_workers) of every live ConcurrentJob in this process."""
    from workhorse.concurrent import live_concurrent_jobs

    for job in live_concurrent_jobs():
        yield job.name, job.running_workers


class CoreCollector:
    """Custom collector: gauges of the Rust core's figures, read at scrape time."""

    def __init__(
        self,
        sources: WorkerFigures,
        *,
        jobs: JobFigures | None = None,
        namespace: str = "workhorse",
    ) -> None:
        self._sources = sources
        self._jobs = jobs
        self._ns = _check_prefix("namespace", namespace)
        self._warned = False

    def describe(self) -> Iterable[Metric]:
        # Names only, so registering a second collector with the same names fails loudly.
        return self._families({}, {})

    def collect(self) -> Iterable[Metric]:
        workers: dict[str, dict[str, float]] = {}
        for name, figures in self._read(self._sources):
            _merge(workers.setdefault(name, {}), figures)
        jobs: dict[str, float] = {}
        for name, running in self._read(self._jobs) if self._jobs is not None else ():
            jobs[name] = jobs.get(name, 0.0) + running
        return self._families(workers, jobs)

    def _read(self, source: Callable[[], Iterable[_T]]) -> list[_T]:
        try:
            return list(source())
        except Exception:  # noqa: BLE001 - a scrape must still return every other metric
            if not self._warned:  # once: scrapes come every few seconds
                self._warned = True
                logger.warning("reading the core's figures failed", exc_info=True)
            return []

    def _families(
        self, workers: dict[str, dict[str, float]], jobs: dict[str, float]
    ) -> list[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            SummaryMetricFamily,
        )

        families: list[Metric] = []
        for key, (name, doc) in _CORE_GAUGES.items():
            gauge = GaugeMetricFamily(_name(self._ns, "core", name), doc, labels=["worker"])
            for worker, figures in workers.items():
                if key in figures:
                    gauge.add_metric([worker], figures[key])
            families.append(gauge)
        ticks = CounterMetricFamily(
            _name(self._ns, "core_interval_ticks"), "Interval ticks fired.", labels=["worker"]
        )
        # A summary gives <ns>_core_interval_lateness_seconds_sum and _count (= ticks), so
        # rate(sum) / rate(count) is the mean lateness.
        lateness = SummaryMetricFamily(
            _name(self._ns, "core_interval_lateness_seconds"),
            "Lateness of interval ticks, in seconds.",
            labels=["worker"],
        )
        for worker, figures in workers.items():
            if "interval_ticks_total" in figures:
                ticks.add_metric([worker], figures["interval_ticks_total"])
                if "interval_lateness_seconds_sum" in figures:
                    lateness.add_metric(
                        [worker],
                        int(figures["interval_ticks_total"]),
                        figures["interval_lateness_seconds_sum"],
                    )
        running = GaugeMetricFamily(
            _name(self._ns, "concurrent_job_running_workers"),
            "Workers a ConcurrentJob runs now.",
            labels=["job"],
        )
        for job, count in jobs.items():
            running.add_metric([job], count)
        families += [ticks, lateness, running]
        return families


def _merge(into: dict[str, float], figures: dict[str, float]) -> None:
    # Workers sharing a name are added up (one series per name); maxima stay maxima.
    for key, value in figures.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if key not in into:
            into[key] = float(value)
        elif key.endswith("_max"):
            into[key] = max(into[key], float(value))
        else:
            into[key] += value


def register_core_collector(
    registry: CollectorRegistry | None = None, namespace: str = "workhorse"
) -> CoreCollector:
    """Register (once per registry and namespace) the collector of every live worker's figures."""
    registry = _registry(registry)
    with _lock:
        by_ns = _collectors.setdefault(registry, {})
        collector = by_ns.get(namespace)
        if collector is None:
            collector = CoreCollector(
                _live_worker_figures, jobs=_live_concurrent_job_figures, namespace=namespace
            )
            registry.register(collector)
            by_ns[namespace] = collector
    return collector
