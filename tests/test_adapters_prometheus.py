"""The prometheus adapter and the core collector, against a real prometheus_client registry."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from support import run

import workhorse.concurrent
import workhorse.worker
from workhorse.adapters import REQUEST_SIZE, RESPONSE_SIZE, prometheus, register_core_collector
from workhorse.adapters.prometheus import CoreCollector
from workhorse.errors import ArgError
from workhorse.job import Context, Job
from workhorse.middleware import Adapter, Handler, adapt, apply_status_rules, is_async_handler
from workhorse.status import Status


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_counts_executions_by_final_status_and_handler(registry: CollectorRegistry) -> None:
    def handler(job: Job) -> None:
        if job.args.get("fail"):
            raise RuntimeError("boom")
        if job.args.get("bad"):
            raise ArgError("bad arg")

    h = adapt(apply_status_rules(handler), prometheus(registry=registry))
    run(h, Job("email"))
    run(h, Job("email"))
    run(h, Job("email", {"fail": True}))
    run(h, Job("email", {"bad": True}))

    assert value(registry, "workhorse_requests_total", code="200", handler="email") == 2
    assert value(registry, "workhorse_requests_total", code="500", handler="email") == 1
    assert value(registry, "workhorse_requests_total", code="400", handler="email") == 1
    assert value(registry, "workhorse_request_duration_seconds_count", handler="email") == 4
    assert value(registry, "workhorse_in_flight", handler="email") == 0


def test_async_handler_stays_async_and_is_measured(registry: CollectorRegistry) -> None:
    async def handler(job: Job) -> None:
        await asyncio.sleep(0.01)

    h = adapt(apply_status_rules(handler), prometheus(registry=registry))
    assert is_async_handler(h)
    run(h, Job("fetch"))

    assert value(registry, "workhorse_requests_total", code="200", handler="fetch") == 1
    total = value(registry, "workhorse_request_duration_seconds_sum", handler="fetch")
    assert total is not None and total >= 0.01


def test_timeout_is_counted_as_408(registry: CollectorRegistry) -> None:
    def slow(job: Job) -> None:
        time.sleep(0.03)

    h = adapt(apply_status_rules(slow), prometheus(registry=registry))
    job = Job("slow", timeout=0.01)
    job.ctx = Context(deadline=time.monotonic() + 0.01)
    assert run(h, job) == Status.TIMEOUT
    assert value(registry, "workhorse_requests_total", code="408", handler="slow") == 1


def test_in_flight_counts_the_running_execution(registry: CollectorRegistry) -> None:
    seen: list[float | None] = []

    def handler(job: Job) -> None:
        seen.append(value(registry, "workhorse_in_flight", handler="busy"))

    h = adapt(apply_status_rules(handler), prometheus(registry=registry))
    run(h, Job("busy"))
    assert seen == [1.0]
    assert value(registry, "workhorse_in_flight", handler="busy") == 0


def test_sizes_are_observed_only_when_the_handler_reports_them(registry: CollectorRegistry) -> None:
    def handler(job: Job) -> None:
        if "size" in job.args:
            job.ctx.set(REQUEST_SIZE, job.args["size"])
            job.ctx.set(RESPONSE_SIZE, 2 * job.args["size"])

    h = adapt(apply_status_rules(handler), prometheus(registry=registry))
    run(h, Job("copy", {"size": 100}))
    run(h, Job("copy"))

    assert value(registry, "workhorse_request_size_bytes_count", handler="copy") == 1
    assert value(registry, "workhorse_request_size_bytes_sum", handler="copy") == 100
    assert value(registry, "workhorse_response_size_bytes_sum", handler="copy") == 200


def test_namespace_and_subsystem_prefix_the_series(registry: CollectorRegistry) -> None:
    h = adapt(apply_status_rules(lambda job: None), prometheus(registry=registry, subsystem="mail"))
    run(h, Job("send"))
    h = adapt(apply_status_rules(lambda job: None), prometheus(registry=registry, namespace=""))
    run(h, Job("send"))

    assert value(registry, "workhorse_mail_requests_total", code="200", handler="send") == 1
    assert value(registry, "requests_total", code="200", handler="send") == 1


def test_two_adapters_on_one_registry_share_the_series(registry: CollectorRegistry) -> None:
    first = adapt(apply_status_rules(lambda job: None), prometheus(registry=registry))
    second = adapt(apply_status_rules(lambda job: None), prometheus(registry=registry))
    run(first, Job("a"))
    run(second, Job("a"))
    assert value(registry, "workhorse_requests_total", code="200", handler="a") == 2
    assert generate_latest(registry).count(b"# TYPE workhorse_requests_total counter") == 1


def test_ignored_handlers_are_not_recorded(registry: CollectorRegistry) -> None:
    h = adapt(apply_status_rules(lambda job: None), prometheus(registry=registry, ignore=["ping"]))
    run(h, Job("ping"))
    run(h, Job("pong"))
    assert value(registry, "workhorse_requests_total", code="200", handler="ping") is None
    assert value(registry, "workhorse_requests_total", code="200", handler="pong") == 1


def test_invalid_options_are_rejected(registry: CollectorRegistry) -> None:
    with pytest.raises(TypeError):
        prometheus(registry=registry, ignore="ping")
    with pytest.raises(ValueError):
        prometheus(registry=registry, namespace="has space")


def test_an_adapter_raising_inside_is_counted_as_an_internal_error(
    registry: CollectorRegistry,
) -> None:
    def broken(handler: Handler) -> Handler:
        def wrapped(job: Job) -> object:
            handler(job)
            raise RuntimeError("adapter bug")

        return wrapped

    h = adapt(apply_status_rules(lambda job: None), broken, prometheus(registry=registry))
    with pytest.raises(RuntimeError, match="adapter bug"):
        h(Job("x"))
    assert value(registry, "workhorse_requests_total", code="500", handler="x") == 1
    assert value(registry, "workhorse_in_flight", handler="x") == 0


def test_outer_adapter_reads_the_final_status(registry: CollectorRegistry) -> None:
    seen: list[Status] = []

    def reader(handler: Handler) -> Handler:
        def wrapped(job: Job) -> object:
            result = handler(job)
            seen.append(job.ctx.status)
            return result

        return wrapped

    def fail(job: Job) -> None:
        raise RuntimeError("boom")

    adapters: list[Adapter] = [prometheus(registry=registry), reader]
    run(adapt(apply_status_rules(fail), *adapters), Job("f"))
    assert seen == [Status.INTERNAL_ERROR]


FIGURES = {
    "scheduled": 3.0,
    "due": 2.0,
    "ready": 1.0,
    "in_flight": 4.0,
    "permits": 10.0,
    "interval_ticks_total": 7.0,
    "interval_skipped_ticks_total": 2.0,
    "interval_lateness_seconds_sum": 0.5,
    "interval_lateness_seconds_max": 0.2,
}


def test_core_collector_exports_every_figure(registry: CollectorRegistry) -> None:
    registry.register(
        CoreCollector(lambda: [("w1", FIGURES)], jobs=lambda: [("crawl", 3)], namespace="wh")
    )
    expected = {
        "wh_core_scheduled_timers": 3,
        "wh_core_due_queue_depth": 2,
        "wh_core_ready_queue_depth": 1,
        "wh_core_permits_in_use": 4,
        "wh_core_permits": 10,
        "wh_core_interval_ticks_total": 7,
        "wh_core_interval_skipped_ticks_total": 2,
        "wh_core_interval_lateness_seconds_sum": 0.5,
        "wh_core_interval_lateness_seconds_count": 7,
        "wh_core_interval_lateness_seconds_max": 0.2,
    }
    for name, want in expected.items():
        assert value(registry, name, worker="w1") == want, name
    assert value(registry, "wh_concurrent_job_running_workers", job="crawl") == 3
    assert value(registry, "wh_core_panics_total") == 0


def test_core_collector_adds_up_workers_sharing_a_name(registry: CollectorRegistry) -> None:
    other = dict(FIGURES, interval_lateness_seconds_max=0.9)
    registry.register(CoreCollector(lambda: [("w", FIGURES), ("w", other)]))
    assert value(registry, "workhorse_core_permits", worker="w") == 20
    assert value(registry, "workhorse_core_interval_lateness_seconds_max", worker="w") == 0.9


def test_core_collector_survives_a_failing_source(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> Iterator[tuple[str, dict[str, float]]]:
        raise AttributeError("no figures yet")

    registry.register(CoreCollector(broken, jobs=lambda: [("crawl", 1)]))
    with caplog.at_level(logging.WARNING, logger="workhorse"):
        generate_latest(registry)
        generate_latest(registry)
    assert value(registry, "workhorse_concurrent_job_running_workers", job="crawl") == 1
    assert [r.message for r in caplog.records].count("reading the core's figures failed") == 1


class FakeWorker:
    def __init__(self, name: str, figures: Callable[[], dict[str, float]]) -> None:
        self.name = name
        self.figures = figures


class FakeConcurrentJob:
    name = "crawl"
    running_workers = 2


def test_register_core_collector_reads_live_workers_once_per_registry(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    def stopping() -> dict[str, float]:
        raise RuntimeError("worker stopped mid-scrape")

    workers: list[Any] = [FakeWorker("w1", lambda: FIGURES), FakeWorker("gone", stopping)]
    monkeypatch.setattr(workhorse.worker, "live_workers", lambda: workers, raising=False)
    monkeypatch.setattr(
        workhorse.concurrent, "live_concurrent_jobs", lambda: [FakeConcurrentJob()], raising=False
    )
    collector = register_core_collector(registry)
    assert register_core_collector(registry) is collector

    assert value(registry, "workhorse_core_permits", worker="w1") == 10
    assert value(registry, "workhorse_core_permits", worker="gone") is None
    assert value(registry, "workhorse_concurrent_job_running_workers", job="crawl") == 2


def test_register_core_collector_exports_a_real_workers_permits(
    registry: CollectorRegistry,
) -> None:
    register_core_collector(registry)
    worker = workhorse.worker.Worker(concurrency=3, name="figures-test")
    worker.register("noop", lambda job: None)
    with worker:
        assert value(registry, "workhorse_core_permits", worker="figures-test") == 3
        assert value(registry, "workhorse_core_permits_in_use", worker="figures-test") == 0
    assert value(registry, "workhorse_core_permits", worker="figures-test") is None


def test_interval_lateness_is_a_histogram_of_a_real_workers_ticks(
    registry: CollectorRegistry,
) -> None:
    register_core_collector(registry)
    worker = workhorse.worker.Worker(name="lateness-test")
    worker.register("noop", lambda job: None)
    with worker:
        worker.perform_every(Job("noop"), 0.005)
        deadline = time.monotonic() + 2
        ticks = 0.0
        while ticks < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
            ticks = value(registry, "workhorse_core_interval_ticks_total", worker="lateness-test")
        assert ticks >= 5
        name = "workhorse_core_interval_lateness_seconds"
        count = value(registry, f"{name}_count", worker="lateness-test")
        inf = value(registry, f"{name}_bucket", worker="lateness-test", le="+Inf")
        assert count == inf and count >= 5
        # Cumulative buckets never decrease and the last finite one is at most +Inf.
        le_25ms = value(registry, f"{name}_bucket", worker="lateness-test", le="0.025")
        le_100us = value(registry, f"{name}_bucket", worker="lateness-test", le="0.0001")
        assert le_100us is not None and le_25ms is not None
        assert le_100us <= le_25ms <= inf


def test_executions_on_many_threads_add_up_exactly(registry: CollectorRegistry) -> None:
    # The sync wrapper counts in the core's atomics from whichever executor thread ran it.
    def handler(job: Job) -> None:
        if job.args["n"] % 10 == 0:
            raise RuntimeError("every tenth fails")

    with workhorse.worker.Worker(concurrency=4) as worker:
        worker.register("count", handler)
        worker.use(prometheus(registry=registry))
        executions = [worker.perform(Job("count", {"n": n})) for n in range(2000)]
        for execution in executions:
            execution.wait(5)
    assert value(registry, "workhorse_requests_total", code="200", handler="count") == 1800
    assert value(registry, "workhorse_requests_total", code="500", handler="count") == 200
    assert value(registry, "workhorse_request_duration_seconds_count", handler="count") == 2000
    assert value(registry, "workhorse_in_flight", handler="count") == 0


def test_only_int_and_float_sizes_are_observed(registry: CollectorRegistry) -> None:
    def handler(job: Job) -> None:
        job.ctx.set(REQUEST_SIZE, job.args["size"])

    h = adapt(apply_status_rules(handler), prometheus(registry=registry))
    for size in (True, "100", None, 1.5, 10**400):
        run(h, Job("sized", {"size": size}))
    # The float and the int too large for a float (above every bucket) are counted.
    assert value(registry, "workhorse_request_size_bytes_count", handler="sized") == 2
    assert value(registry, "workhorse_request_size_bytes_bucket", handler="sized", le="64.0") == 1
    assert value(registry, "workhorse_request_size_bytes_sum", handler="sized") == float("inf")


def test_a_job_like_object_is_measured_through_its_attributes(registry: CollectorRegistry) -> None:
    class LikeAJob:
        handler = "duck"
        args: dict[str, Any] = {}

        def __init__(self) -> None:
            self.ctx = Context()

    def handler(job: Any) -> None:
        job.ctx.status = Status.UNAVAILABLE

    h = adapt(handler, prometheus(registry=registry))
    h(LikeAJob())  # type: ignore[arg-type]
    assert value(registry, "workhorse_requests_total", code="503", handler="duck") == 1


def test_a_cycle_through_the_measured_handler_is_collected(registry: CollectorRegistry) -> None:
    import gc
    import weakref

    class Service:
        def handle(self, job: Job) -> None:
            return None

    service = Service()
    service.chain = prometheus(registry=registry)(service.handle)  # type: ignore[attr-defined]
    gone = weakref.ref(service)
    del service
    gc.collect()
    assert gone() is None
