"""Prometheus series of a durable queue, read from its client at scrape time.

Per job name: jobs by state (ready, scheduled, retry, dead, running), the oldest ready job's wait
and the paused flag; queue-wide counters: processed, failed, dead, stale acks refused, reaped
leases. Together with the prometheus adapter's per-handler requests (by status: 200 done, 500
failed, 503 retry requested, 400 bad arguments, 408 timeout) and durations, these are isp-kit
bgjobx's job figures.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from workhorse.adapters.prometheus import _check_prefix, _name, _registry
from workhorse.queue.queue import Queue

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

__all__ = ["QueueCollector", "register_queue_collector"]

logger = logging.getLogger("workhorse")
_STATES = ("ready", "scheduled", "retry", "dead", "running")
_COUNTERS = ("processed", "failed", "dead", "stale_acks", "reaped", "data_losses")


class QueueCollector:
    """Custom collector of one queue's figures (one backend round trip per scrape and call)."""

    def __init__(self, queue: Queue, *, namespace: str = "workhorse") -> None:
        if not isinstance(queue, Queue):
            raise TypeError(f"queue must be a wh.Queue, got {type(queue).__name__}")
        self._queue = queue
        self._ns = _check_prefix("namespace", namespace)

    def describe(self) -> Iterable[Metric]:
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        try:
            return self._families(self._queue)
        except Exception:  # noqa: BLE001 - a scrape must not fail because the backend did
            logger.warning("queue metrics: reading %r failed", self._queue, exc_info=True)
            return self._families(None)

    def _families(self, queue: Queue | None) -> list[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        jobs = GaugeMetricFamily(
            _name(self._ns, "queue_jobs"),
            "Queued jobs by name and state.",
            labels=["name", "state"],
        )
        latency = GaugeMetricFamily(
            _name(self._ns, "queue_latency_seconds"),
            "Seconds the oldest ready job of a name has waited.",
            labels=["name"],
        )
        paused = GaugeMetricFamily(
            _name(self._ns, "queue_paused"), "1 while a job name is paused.", labels=["name"]
        )
        counters = {
            key: CounterMetricFamily(
                _name(self._ns, f"queue_{key}"), f"Queued jobs {key.replace('_', ' ')}."
            )
            for key in _COUNTERS
        }
        if queue is not None:
            client = queue.client
            for info in client.queues():
                for state in _STATES:
                    jobs.add_metric([info.name, state], float(getattr(info, state)))
                latency.add_metric([info.name], info.latency)
                paused.add_metric([info.name], 1.0 if info.paused else 0.0)
            stats = client.stats()
            for key, family in counters.items():
                family.add_metric([], float(stats[key]))
        return [jobs, latency, paused, *counters.values()]


def register_queue_collector(
    queue: Queue, registry: CollectorRegistry | None = None, namespace: str = "workhorse"
) -> QueueCollector:
    """Export a queue's figures from `registry` (the default one if None)."""
    collector = QueueCollector(queue, namespace=namespace)
    _registry(registry).register(collector)
    return collector
