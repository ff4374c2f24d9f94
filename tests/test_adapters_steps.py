"""step_timings: job.trace.mark() steps observed into a Prometheus histogram."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry
from support import run

from workhorse.adapters import step_timings
from workhorse.job import Job
from workhorse.middleware import adapt, apply_status_rules, is_async_handler
from workhorse.status import Status


def count(registry: CollectorRegistry, handler: str, step: str) -> float | None:
    labels = {"handler": handler, "step": step}
    return registry.get_sample_value("workhorse_job_step_duration_seconds_count", labels)


def test_each_marked_step_is_observed(registry: CollectorRegistry) -> None:
    in_flight: list[float | None] = []

    def handler(job: Job) -> None:
        job.trace.mark("fetch")
        in_flight.append(registry.get_sample_value("workhorse_jobs_in_flight"))
        job.trace.mark("store")

    h = adapt(apply_status_rules(handler), step_timings(registry=registry))
    run(h, Job("sync"))
    run(h, Job("sync"))

    assert count(registry, "sync", "fetch") == 2
    assert count(registry, "sync", "store") == 2
    assert in_flight == [1.0, 1.0]
    assert registry.get_sample_value("workhorse_jobs_in_flight") == 0


def test_a_job_that_never_marks_gets_no_trace(registry: CollectorRegistry) -> None:
    h = adapt(apply_status_rules(lambda job: None), step_timings(registry=registry))
    job = Job("quiet")
    run(h, job)
    assert job.ctx._trace is None
    assert "step=" not in repr(list(registry.collect()))


def test_async_handler_and_a_failing_one_are_observed(registry: CollectorRegistry) -> None:
    async def handler(job: Job) -> None:
        job.trace.mark("connect")
        await asyncio.sleep(0.01)
        job.trace.mark("query")
        raise RuntimeError("db gone")

    h = adapt(apply_status_rules(handler), step_timings(registry=registry, namespace="app"))
    assert is_async_handler(h)
    assert run(h, Job("report")) == Status.INTERNAL_ERROR

    labels = {"handler": "report", "step": "query"}
    slept = registry.get_sample_value("app_job_step_duration_seconds_sum", labels)
    assert slept is not None and slept >= 0.01


def test_adapters_on_one_registry_share_the_series(registry: CollectorRegistry) -> None:
    def handler(job: Job) -> None:
        job.trace.mark("only")

    run(adapt(apply_status_rules(handler), step_timings(registry=registry)), Job("a"))
    run(adapt(apply_status_rules(handler), step_timings(registry=registry)), Job("a"))
    assert count(registry, "a", "only") == 2


def test_invalid_namespace_is_rejected(registry: CollectorRegistry) -> None:
    with pytest.raises(ValueError):
        step_timings(registry=registry, namespace="no-dashes")
