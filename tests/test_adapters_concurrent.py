"""The adapters on a real Worker running one Job object several times at once: each execution
keeps its own request id, span, gathered lines, steps and status (all read from job.ctx)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

import workhorse as wh
from workhorse.adapters import (
    REQUEST_ID,
    aggregate_logging,
    prometheus,
    request_id,
    step_timings,
    tracing,
)

RUNS = 3
app = logging.getLogger("test.concurrent.app")


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.jobs: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.jobs.append(record.job)  # type: ignore[attr-defined]


@pytest.fixture
def records() -> Iterator[Records]:
    logger = logging.getLogger("test.concurrent.jobs")
    handler = Records()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    app.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)


@pytest.mark.parametrize("is_async", [False, True])
def test_one_job_performed_at_once_keeps_each_executions_own_state(
    make_worker: Callable[..., wh.Worker],
    registry: CollectorRegistry,
    records: Records,
    is_async: bool,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    worker = make_worker(concurrency=RUNS)
    worker.use(
        request_id(),
        tracing(provider),
        step_timings(registry=registry),
        prometheus(registry=registry),
        aggregate_logging(logger="test.concurrent.jobs"),
    )
    seen: list[str] = []
    lock = threading.Lock()
    all_in = threading.Barrier(RUNS)

    def begin(job: wh.Job) -> str:
        rid: str = job.ctx.get(REQUEST_ID)
        with lock:
            seen.append(rid)
        job.trace.mark("begin")
        job.ctx.get("logger").info("mine %s", rid)
        return rid

    if is_async:
        state: dict[str, Any] = {}

        @worker.handler("work")
        async def work_async(job: wh.Job) -> None:
            if "event" not in state:
                state["event"] = asyncio.Event()
            rid = begin(job)
            if len(seen) == RUNS:
                state["event"].set()
            await asyncio.wait_for(state["event"].wait(), 5)  # every execution is in flight
            app.info("done %s", rid)
            job.trace.mark("end")

    else:

        @worker.handler("work")
        def work(job: wh.Job) -> None:
            rid = begin(job)
            all_in.wait(timeout=5)  # every execution is in flight
            app.info("done %s", rid)
            job.trace.mark("end")

    job = wh.Job("work")
    with worker:
        executions = [worker.perform(job) for _ in range(RUNS)]
        statuses = [execution.wait(timeout=5) for execution in executions]
    assert statuses == [wh.Status.SUCCESS] * RUNS

    assert len(set(seen)) == RUNS
    by_rid = {fields["request_id"]: fields for fields in records.jobs}
    assert set(by_rid) == set(seen)
    for rid, fields in by_rid.items():
        lines = [line["message"] for line in fields["lines"]]
        assert lines == [f"mine {rid}", f"done {rid}"]
    spans = exporter.get_finished_spans()
    assert len({span.context.trace_id for span in spans}) == RUNS
    assert {fields["trace_id"] for fields in records.jobs} == {
        format(span.context.trace_id, "032x") for span in spans
    }
    assert len({fields["job_id"] for fields in records.jobs}) == RUNS
    labels = {"handler": "work", "step": "end"}
    assert registry.get_sample_value("workhorse_job_step_duration_seconds_count", labels) == RUNS
    assert registry.get_sample_value("workhorse_jobs_in_flight") == 0
    requests = {"code": "200", "handler": "work"}
    assert registry.get_sample_value("workhorse_requests_total", requests) == RUNS
    assert registry.get_sample_value("workhorse_in_flight", {"handler": "work"}) == 0
