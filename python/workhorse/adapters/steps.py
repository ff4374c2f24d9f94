"""Step timings: the seconds between job.trace.mark() calls, as a Prometheus histogram."""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING

from workhorse.adapters._wrap import around
from workhorse.adapters.prometheus import _check_prefix, _registry
from workhorse.job import Job
from workhorse.middleware import Adapter, Handler

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Gauge, Histogram

__all__ = ["step_timings"]

_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# One pair of metric objects per registry and namespace, shared by every adapter on it.
_lock = threading.Lock()
_series: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, tuple[Histogram, Gauge]]] = (
    weakref.WeakKeyDictionary()
)


def _metrics(registry: CollectorRegistry, namespace: str) -> tuple[Histogram, Gauge]:
    from prometheus_client import Gauge, Histogram

    with _lock:
        by_ns = _series.setdefault(registry, {})
        if namespace not in by_ns:
            by_ns[namespace] = (
                Histogram(
                    "job_step_duration_seconds",
                    "Seconds each step of a job took (job.trace.mark).",
                    ["handler", "step"],
                    namespace=namespace,
                    registry=registry,
                    buckets=_BUCKETS,
                ),
                Gauge(
                    "jobs_in_flight",
                    "Executions running now.",
                    namespace=namespace,
                    registry=registry,
                ),
            )
        return by_ns[namespace]


def step_timings(
    *, registry: CollectorRegistry | None = None, namespace: str = "workhorse"
) -> Adapter:
    """Adapter observing each (step, seconds) of job.trace into <ns>_job_step_duration_seconds."""
    steps, in_flight = _metrics(_registry(registry), _check_prefix("namespace", namespace))

    def before(job: Job) -> None:
        in_flight.inc()

    def after(job: Job, state: None, raised: BaseException | None) -> None:
        in_flight.dec()
        trace = job.ctx._trace  # job.trace would create one for a job that never marked a step
        if trace is not None:
            for step, seconds in trace.steps:
                steps.labels(job.handler, step).observe(seconds)

    def adapter(handler: Handler) -> Handler:
        return around(handler, before, after)

    return adapter
