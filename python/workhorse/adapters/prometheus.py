"""Prometheus metrics: go-work's per-execution series plus gauges read from the Rust core."""

from __future__ import annotations

import logging
import re
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, cast

from workhorse import _core
from workhorse.adapters._wrap import final_status
from workhorse.adapters.keys import REQUEST_SIZE, RESPONSE_SIZE
from workhorse.job import Job
from workhorse.middleware import Adapter, Handler, is_async_handler
from workhorse.status import Status
from workhorse.worker import LATENESS_LE

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

__all__ = ["CoreCollector", "prometheus", "register_core_collector"]

logger = logging.getLogger("workhorse")
_T = TypeVar("_T")
# One handler's figures as Meter.snapshot() gives them: (handler, {code: n}, duration counts,
# duration sum, in flight, request size counts + [sum], response size counts + [sum]).
_Figures = tuple[str, dict[int, int], list[int], float, int, list[float], list[float]]

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
    if registry is None:
        return prometheus_client.REGISTRY
    if not isinstance(registry, prometheus_client.CollectorRegistry):
        raise TypeError(
            f"registry must be a prometheus_client.CollectorRegistry or None, "
            f"got {type(registry).__name__}"
        )
    return registry


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
    """go-work's series for one (registry, namespace, subsystem).

    The core counts (rust/src/adapters.rs): a sync handler is wrapped in its `Measured`, which
    records each execution into atomics with no Python frame; the registry reads them when it is
    scraped. prometheus_client's metric objects take a lock per update, which would cost more
    than a short job itself.
    """

    def __init__(self, registry: CollectorRegistry, namespace: str, subsystem: str) -> None:
        self.prefix = "_".join(p for p in (namespace, subsystem) if p)
        self.meter = _core.Meter(
            [int(s) for s in Status],
            list(_DURATION_BUCKETS),
            list(_SIZE_BUCKETS),
            (REQUEST_SIZE, RESPONSE_SIZE),
            final_status,
        )
        registry.register(self)

    def describe(self) -> list[Metric]:
        return self._families([])

    def collect(self) -> list[Metric]:
        return self._families(self.meter.snapshot())

    def _families(self, merged: list[_Figures]) -> list[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        def name(suffix: str) -> str:
            return f"{self.prefix}_{suffix}" if self.prefix else suffix

        requests = CounterMetricFamily(
            name("requests"), "Executions by final status code.", labels=["code", "handler"]
        )
        duration = HistogramMetricFamily(
            name("request_duration_seconds"), "Execution latency in seconds.", labels=["handler"]
        )
        request_size = HistogramMetricFamily(
            name("request_size_bytes"),
            "Request sizes the handlers reported, in bytes.",
            labels=["handler"],
        )
        response_size = HistogramMetricFamily(
            name("response_size_bytes"),
            "Response sizes the handlers reported, in bytes.",
            labels=["handler"],
        )
        in_flight = GaugeMetricFamily(
            name("in_flight"), "Executions running now.", labels=["handler"]
        )
        for handler, codes, durations, duration_sum, running, req, resp in merged:
            for code, n in sorted(codes.items()):
                requests.add_metric([str(code), handler], n)
            duration.add_metric([handler], _cumulative(_DURATION_BUCKETS, durations), duration_sum)
            for family, sizes in ((request_size, req), (response_size, resp)):
                family.add_metric([handler], _cumulative(_SIZE_BUCKETS, sizes[:-1]), sizes[-1])
            in_flight.add_metric([handler], running)
        return [requests, duration, request_size, response_size, in_flight]


def _cumulative(bounds: tuple[float, ...], counts: list[Any]) -> list[tuple[str, float]]:
    from prometheus_client.utils import floatToGoString

    buckets: list[tuple[str, float]] = []
    running = 0.0
    for bound, count in zip(bounds, counts[: len(bounds)], strict=True):
        running += count
        buckets.append((floatToGoString(bound), running))  # type: ignore[no-untyped-call]
    running += counts[len(bounds)]
    buckets.append(("+Inf", running))
    return buckets


def prometheus(
    *,
    registry: CollectorRegistry | None = None,
    namespace: str = "workhorse",
    subsystem: str = "",
    ignore: Iterable[str] = (),
) -> Adapter:
    """Adapter recording requests_total, request_duration_seconds, sizes and in_flight."""
    if isinstance(ignore, (str, bytes)) or not isinstance(ignore, Iterable):
        raise TypeError(
            f"ignore must be a collection of handler names, got {type(ignore).__name__}"
        )
    names = list(ignore)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"ignore must hold handler names (str), got {name!r}")
    ignored = frozenset(names)
    _check_prefix("namespace", namespace)
    _check_prefix("subsystem", subsystem)
    registry = _registry(registry)
    with _lock:
        by_name = _series.setdefault(registry, {})
        series = by_name.get((namespace, subsystem))
        if series is None:
            series = by_name[(namespace, subsystem)] = _Series(registry, namespace, subsystem)

    meter = series.meter

    def adapter(handler: Handler) -> Handler:
        if not is_async_handler(handler):
            return cast(Handler, meter.wrap(handler, ignored))
        async_handler = cast(Callable[[Job], Awaitable[object]], handler)

        async def measured_async(job: Job) -> object:
            if job.handler in ignored:
                return await async_handler(job)
            started = meter.start(job.handler)
            try:
                result = await async_handler(job)
            except BaseException as exc:
                meter.finish_async(job, started, exc)
                raise
            meter.finish_async(job, started)
            return result

        return measured_async

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
        if not callable(sources):
            raise TypeError(f"sources must be callable, got {type(sources).__name__}")
        if jobs is not None and not callable(jobs):
            raise TypeError(f"jobs must be callable or None, got {type(jobs).__name__}")
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
            HistogramMetricFamily,
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
        skipped = CounterMetricFamily(
            _name(self._ns, "core_interval_skipped_ticks"),
            "Interval ticks skipped: a sync run still going, or an async job at its overlap limit.",
            labels=["worker"],
        )
        # A histogram: <ns>_core_interval_lateness_seconds_bucket/_sum/_count (count = ticks), so
        # rate(sum) / rate(count) is the mean lateness and histogram_quantile gives the tail.
        lateness = HistogramMetricFamily(
            _name(self._ns, "core_interval_lateness_seconds"),
            "Lateness of interval ticks behind their fixed-rate schedule, in seconds.",
            labels=["worker"],
        )
        for worker, figures in workers.items():
            if "interval_skipped_ticks_total" in figures:
                skipped.add_metric([worker], figures["interval_skipped_ticks_total"])
            if "interval_ticks_total" in figures:
                ticks.add_metric([worker], figures["interval_ticks_total"])
                if "interval_lateness_seconds_sum" in figures:
                    lateness.add_metric(
                        [worker],
                        _lateness_buckets(figures),
                        figures["interval_lateness_seconds_sum"],
                    )
        running = GaugeMetricFamily(
            _name(self._ns, "concurrent_job_running_workers"),
            "Workers a ConcurrentJob runs now.",
            labels=["job"],
        )
        for job, count in jobs.items():
            running.add_metric([job], count)
        panics = CounterMetricFamily(
            _name(self._ns, "core_panics"),
            "Internal errors (panics) of the core's background threads, reported on stderr.",
        )
        from workhorse import _core

        panics.add_metric([], _core.core_panics())
        families += [ticks, skipped, lateness, running, panics]
        return families


def _lateness_buckets(figures: dict[str, float]) -> list[tuple[str, float]]:
    """Cumulative (le, count) pairs from a worker's `interval_lateness_le:<bound>` figures."""
    from prometheus_client.utils import floatToGoString

    bounds = sorted(
        (float(key.partition(":")[2]), value)
        for key, value in figures.items()
        if key.startswith(LATENESS_LE)
    )
    buckets = [(floatToGoString(bound), count) for bound, count in bounds]  # type: ignore[no-untyped-call]
    buckets.append(("+Inf", figures["interval_ticks_total"]))
    return buckets


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
    _check_prefix("namespace", namespace)
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
