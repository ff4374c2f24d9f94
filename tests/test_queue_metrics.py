"""A queue's figures as Prometheus series, read at scrape time."""

from __future__ import annotations

import pytest

import workhorse as wh
from workhorse.adapters import register_queue_collector

pytestmark = pytest.mark.timeout(30)


def test_queue_figures_are_exported_per_name_and_state(registry, make_queue):
    from prometheus_client import generate_latest

    queue = make_queue()
    register_queue_collector(queue, registry, namespace="wh")
    queue.enqueue("a")
    queue.enqueue_in("a", 60)
    queue.enqueue("b")
    queue.client.pause("b")
    worker = wh.Worker(concurrency=1, queue=queue)
    worker.register("a", lambda job: None)
    assert worker.drain(5)
    worker.stop(2)
    text = generate_latest(registry).decode()
    assert 'wh_queue_jobs{name="a",state="scheduled"} 1.0' in text
    assert 'wh_queue_jobs{name="a",state="ready"} 0.0' in text
    assert 'wh_queue_jobs{name="b",state="ready"} 1.0' in text
    assert 'wh_queue_paused{name="b"} 1.0' in text
    assert "wh_queue_processed_total 1.0" in text


def test_a_queue_collector_needs_a_queue(registry):
    with pytest.raises(TypeError, match="queue"):
        register_queue_collector("memory://", registry)  # type: ignore[arg-type]
