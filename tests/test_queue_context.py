"""Context travels with a queued job: the enqueuing execution's request id is restored in the
worker, and the job's CONSUMER span is a child of the PRODUCER span made at enqueue."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import workhorse as wh
from workhorse.adapters import request_id, tracing
from workhorse.queue import context

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def _no_leftover_producer():
    # A tracing adapter registers the process's producer: none from another test leaks in or out.
    context._providers.pop("otel", None)
    yield
    context._providers.pop("otel", None)


def test_the_enqueuing_request_id_is_restored_in_the_worker(make_queue):
    queue = make_queue()
    inproc = wh.Worker(concurrency=1, adapters=[request_id()])
    worker = wh.Worker(concurrency=1, queue=queue, adapters=[request_id()])
    seen = {}

    @inproc.handler("web")
    def web(job):
        seen["web"] = job.ctx.get(wh.REQUEST_ID)
        queue.enqueue("email", {"to": "a@b.c"})

    @worker.handler("email")
    def email(job):
        seen["email"] = job.ctx.get(wh.REQUEST_ID)
        seen["meta"] = job.meta

    with inproc:
        assert inproc.perform(wh.Job("web"), sync=True) is wh.Status.SUCCESS
    assert worker.drain(5)
    worker.stop(2)
    assert seen["web"] and seen["email"] == seen["web"]
    assert seen["meta"]["request_id"] == seen["web"]


def test_a_job_enqueued_outside_any_execution_carries_nothing(make_queue):
    queue = make_queue()
    job = queue.enqueue("email")
    assert job.meta is None


def test_the_consumer_span_is_a_child_of_the_producer_span(make_queue):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    queue = make_queue()
    worker = wh.Worker(concurrency=1, queue=queue, adapters=[tracing(provider)])
    worker.register("email", lambda job: None)
    stored = queue.enqueue("email")
    assert stored.meta is not None and "traceparent" in stored.meta
    assert worker.drain(5)
    worker.stop(2)
    spans = {span.kind: span for span in exporter.get_finished_spans()}
    producer, consumer = spans[SpanKind.PRODUCER], spans[SpanKind.CONSUMER]
    assert producer.name == "send email" and consumer.name == "process email"
    assert consumer.parent is not None
    assert consumer.parent.span_id == producer.context.span_id
    assert consumer.context.trace_id == producer.context.trace_id
    assert consumer.attributes["messaging.message.id"] == stored.id
