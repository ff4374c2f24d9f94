"""The tracing adapter against the OpenTelemetry SDK and its in-memory exporter."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from support import run

from workhorse.adapters import tracing
from workhorse.errors import ArgError
from workhorse.job import Context, Job
from workhorse.middleware import adapt, apply_status_rules, is_async_handler
from workhorse.status import Status

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def only_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    (span,) = exporter.get_finished_spans()
    return span


def test_one_consumer_span_per_execution_with_messaging_attributes(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    h = adapt(apply_status_rules(lambda job: None), tracing(provider))
    job = Job("email", queue="mail")
    run(h, job)

    span = only_span(exporter)
    assert span.name == "process mail"  # "{messaging.operation.name} {destination}"
    assert span.kind == SpanKind.CONSUMER
    assert dict(span.attributes or {}) == {
        "messaging.system": "workhorse",
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.destination.name": "mail",
        "messaging.message.id": job.id,
        "workhorse.handler": "email",
        "workhorse.status": 200,
    }
    assert span.status.status_code == StatusCode.UNSET
    assert span.parent is None
    assert job.ctx.get("trace_id") == format(span.context.trace_id, "032x")


def test_a_failure_marks_the_span_and_records_the_exception(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    def fail(job: Job) -> None:
        raise RuntimeError("boom")

    run(adapt(apply_status_rules(fail), tracing(provider, system="billing")), Job("charge"))

    span = only_span(exporter)
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == "RuntimeError: boom"
    assert span.attributes is not None
    assert span.attributes["workhorse.status"] == 500
    assert span.attributes["messaging.system"] == "billing"
    assert span.attributes["error.type"] == "RuntimeError"
    (event,) = span.events
    assert event.name == "exception"
    assert event.attributes is not None and event.attributes["exception.message"] == "boom"


def test_a_timeout_is_an_error_without_an_exception(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async def slow(job: Job) -> None:
        await asyncio.sleep(1)

    h = adapt(apply_status_rules(slow), tracing(provider))
    job = Job("slow", timeout=0.01)
    job.ctx = Context(deadline=time.monotonic() + 0.01)
    assert run(h, job) == Status.TIMEOUT

    span = only_span(exporter)
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes is not None and span.attributes["workhorse.status"] == 408


def test_a_bad_request_is_not_a_span_error(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    def bad(job: Job) -> None:
        raise ArgError("missing 'to'")

    run(adapt(apply_status_rules(bad), tracing(provider)), Job("email"))
    span = only_span(exporter)
    assert span.status.status_code == StatusCode.UNSET
    assert span.attributes is not None and span.attributes["workhorse.status"] == 400


def test_the_parent_comes_from_a_traceparent_argument(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    args = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "vendor=x"}
    job = Job("email", args)
    run(adapt(apply_status_rules(lambda job: None), tracing(provider)), job)

    span = only_span(exporter)
    assert span.parent is not None and span.parent.is_remote
    assert format(span.parent.span_id, "016x") == PARENT_ID
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.context.trace_state.get("vendor") == "x"
    assert job.ctx.get("trace_id") == TRACE_ID


def test_the_parent_comes_from_an_otel_context_on_ctx(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    parent = provider.get_tracer("test").start_span("enqueue")
    job = Job("email")
    job.ctx.set("otel_context", trace.set_span_in_context(parent))
    run(adapt(apply_status_rules(lambda job: None), tracing(provider)), job)
    parent.end()

    span = exporter.get_finished_spans()[0]
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id


def test_spans_the_handler_starts_are_children_of_the_job_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async def handler(job: Job) -> None:
        with provider.get_tracer("test").start_as_current_span("query"):
            await asyncio.sleep(0)

    h = adapt(apply_status_rules(handler), tracing(provider))
    assert is_async_handler(h)
    run(h, Job("report"))

    child, job_span = exporter.get_finished_spans()
    assert child.name == "query"
    assert child.parent is not None
    assert child.parent.span_id == job_span.context.span_id
    assert trace.get_current_span() is trace.INVALID_SPAN  # detached again


def test_missing_opentelemetry_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ImportError, match=r"pip install workhorse\[otel\]"):
        tracing()


def test_invalid_system_is_rejected() -> None:
    with pytest.raises(TypeError):
        tracing(system="")
