"""aggregate_logging: one stdlib record per execution with every line logged during it."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Iterator
from datetime import datetime
from typing import Any, cast

import pytest
from support import run

from workhorse.adapters import REQUEST_ID, aggregate_logging, request_id, tracing
from workhorse.errors import ArgError
from workhorse.job import Job
from workhorse.middleware import adapt, apply_status_rules, is_async_handler
from workhorse.status import Status

app = logging.getLogger("test.app")


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def jobs(self) -> list[dict[str, Any]]:
        return [r.job for r in self.records]  # type: ignore[attr-defined]


@pytest.fixture
def out() -> Iterator[tuple[logging.Logger, Records]]:
    logger = logging.getLogger("test.jobs")
    records = Records()
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    app.setLevel(logging.DEBUG)
    yield logger, records
    logger.removeHandler(records)


def lines(fields: dict[str, Any]) -> list[tuple[str, str]]:
    return [(line["level"], line["message"]) for line in fields["lines"]]


def test_one_record_with_lines_from_ctx_logger_and_stdlib(
    out: tuple[logging.Logger, Records],
) -> None:
    logger, records = out

    def handler(job: Job) -> None:
        job.ctx.get("logger").info("sending to %s", job.args["to"])
        app.warning("slow smtp")
        job.ctx.get("logger").debug("not gathered below INFO")

    h = adapt(apply_status_rules(handler), aggregate_logging(logger=logger))
    job = Job("email", {"to": "a@b.c"})
    run(h, job)

    (record,) = records.records
    assert record.levelno == logging.INFO
    assert record.getMessage().startswith("job email 200 in ")
    (fields,) = records.jobs()
    assert lines(fields) == [("INFO", "sending to a@b.c"), ("WARNING", "slow smtp")]
    assert fields["handler"] == "email"
    assert fields["job_id"] == job.id
    assert fields["status"] == 200
    assert fields["latency_ms"] >= 0
    assert datetime.fromisoformat(fields["time"]).tzinfo is not None
    assert (fields["trace_id"], fields["worker_number"], fields["comment"]) == (None, None, None)
    assert fields["request_id"] is None  # no request_id() in the chain


def test_fields_from_the_context_and_utc_time(out: tuple[logging.Logger, Records]) -> None:
    logger, records = out

    def handler(job: Job) -> None:
        job.ctx.set("trace_id", "abc")
        job.ctx.set("worker_number", 2)
        job.ctx.set("comment", "retry of 41")

    run(adapt(apply_status_rules(handler), aggregate_logging(logger=logger, utc=True)), Job("h"))
    (fields,) = records.jobs()
    assert (fields["trace_id"], fields["worker_number"], fields["comment"]) == (
        "abc",
        2,
        "retry of 41",
    )
    assert fields["time"].endswith("+00:00")


@pytest.mark.parametrize("request_id_outside", [False, True])
def test_the_record_carries_the_request_id_without_tracing(
    out: tuple[logging.Logger, Records], request_id_outside: bool
) -> None:
    logger, records = out
    seen: list[str] = []
    handler = apply_status_rules(lambda job: seen.append(job.ctx.get(REQUEST_ID)))
    adapters = [request_id(), aggregate_logging(logger=logger)]
    if request_id_outside:
        adapters.reverse()
    run(adapt(handler, *adapters), Job("email"))

    (fields,) = records.jobs()
    assert fields["request_id"] == seen[0]
    assert fields["trace_id"] is None  # a request id is not a W3C trace id


def test_with_tracing_the_trace_id_is_the_spans_and_the_request_id_stays(
    out: tuple[logging.Logger, Records],
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    logger, records = out
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    h = adapt(
        apply_status_rules(lambda job: None),
        request_id(),
        tracing(provider),
        aggregate_logging(logger=logger),
    )
    run(h, Job("email", {"request_id": "req-7"}))

    (span,) = exporter.get_finished_spans()
    (fields,) = records.jobs()
    assert fields["trace_id"] == format(span.context.trace_id, "032x")
    assert fields["request_id"] == "req-7"


def test_failures_log_at_error_with_the_exception_gathered(
    out: tuple[logging.Logger, Records],
) -> None:
    logger, records = out

    def fail(job: Job) -> None:
        raise RuntimeError("smtp down")

    def bad(job: Job) -> None:
        raise ArgError("missing 'to'")

    run(adapt(apply_status_rules(fail), aggregate_logging(logger=logger)), Job("email"))
    run(adapt(apply_status_rules(bad), aggregate_logging(logger=logger)), Job("email"))

    failed, rejected = records.records
    assert failed.levelno == logging.ERROR
    assert failed.job["status"] == 500  # type: ignore[attr-defined]
    ((level, message),) = lines(failed.job)  # type: ignore[attr-defined]
    assert level == "ERROR" and "smtp down" in message and "Traceback" in message
    assert rejected.levelno == logging.WARNING
    assert rejected.job["status"] == 400  # type: ignore[attr-defined]


def test_async_handler_stays_async(out: tuple[logging.Logger, Records]) -> None:
    logger, records = out

    async def handler(job: Job) -> None:
        app.info("before")
        await asyncio.sleep(0)
        job.ctx.get("logger").info("after")

    h = adapt(apply_status_rules(handler), aggregate_logging(logger=logger))
    assert is_async_handler(h)
    run(h, Job("a"))
    (fields,) = records.jobs()
    assert lines(fields) == [("INFO", "before"), ("INFO", "after")]


def test_concurrent_threads_keep_their_own_lines(out: tuple[logging.Logger, Records]) -> None:
    logger, records = out
    barrier = threading.Barrier(2)

    def handler(job: Job) -> None:
        for i in range(3):
            app.info("%s-%d", job.args["who"], i)
            barrier.wait(timeout=5)

    h = adapt(apply_status_rules(handler), aggregate_logging(logger=logger))
    threads = [threading.Thread(target=h, args=(Job("t", {"who": w}),)) for w in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    by_who = {f["lines"][0]["message"][0]: lines(f) for f in records.jobs()}
    assert by_who == {w: [("INFO", f"{w}-{i}") for i in range(3)] for w in "ab"}


def test_concurrent_tasks_keep_their_own_lines(out: tuple[logging.Logger, Records]) -> None:
    logger, records = out

    async def handler(job: Job) -> None:
        for i in range(3):
            app.info("%s-%d", job.args["who"], i)
            await asyncio.sleep(0)

    h = adapt(apply_status_rules(handler), aggregate_logging(logger=logger))

    async def both() -> None:
        await asyncio.gather(*(cast(Awaitable[object], h(Job("t", {"who": w}))) for w in "ab"))

    asyncio.run(both())
    by_who = {f["lines"][0]["message"][0]: lines(f) for f in records.jobs()}
    assert by_who == {w: [("INFO", f"{w}-{i}") for i in range(3)] for w in "ab"}


def test_only_the_executions_own_records_are_gathered(out: tuple[logging.Logger, Records]) -> None:
    logger, records = out
    h = adapt(apply_status_rules(lambda job: app.info("inside")), aggregate_logging(logger=logger))
    app.info("before")
    run(h, Job("first"))
    app.info("between")
    run(h, Job("second"))
    # Neither the records around the executions nor the aggregate record itself.
    assert [lines(fields) for fields in records.jobs()] == [[("INFO", "inside")]] * 2


def test_level_filters_gathered_lines(out: tuple[logging.Logger, Records]) -> None:
    logger, records = out

    def handler(job: Job) -> None:
        app.info("chatty")
        job.ctx.get("logger").info("chatty too")
        app.error("important")

    h = adapt(apply_status_rules(handler), aggregate_logging(logger=logger, level=logging.WARNING))
    run(h, Job("h"))
    (fields,) = records.jobs()
    assert lines(fields) == [("ERROR", "important")]


def test_silencing_options(out: tuple[logging.Logger, Records]) -> None:
    logger, records = out

    def handler(job: Job) -> None:
        if job.args.get("no_response"):
            job.ctx.set_status(Status.NO_RESPONSE)

    quiet = aggregate_logging(logger=logger, silent_success=True, silent_no_response=True)
    h = adapt(apply_status_rules(handler), quiet)
    run(h, Job("h"))
    run(h, Job("h", {"no_response": True}))
    assert records.records == []

    seen: list[tuple[Status, int]] = []

    def only_with_lines(status: Status, count: int) -> bool:
        seen.append((status, count))
        return count > 0

    def maybe_log(job: Job) -> None:
        if job.args.get("talk"):
            job.ctx.get("logger").info("something")

    h = adapt(
        apply_status_rules(maybe_log),
        aggregate_logging(logger=logger, reduced_logging=only_with_lines),
    )
    run(h, Job("h"))
    run(h, Job("h", {"talk": True}))
    assert seen == [(Status.SUCCESS, 0), (Status.SUCCESS, 1)]
    assert len(records.records) == 1


def test_ctx_logger_handles_bad_formats_and_exceptions(out: tuple[logging.Logger, Records]) -> None:
    logger, records = out

    def handler(job: Job) -> None:
        log = job.ctx.get("logger")
        assert log.isEnabledFor(logging.INFO) and not log.isEnabledFor(logging.DEBUG)
        log.info("%d items", "not a number")
        try:
            raise KeyError("k")
        except KeyError:
            log.exception("lookup failed")

    run(adapt(apply_status_rules(handler), aggregate_logging(logger=logger)), Job("h"))
    (fields,) = records.jobs()
    (_, bad), (level, failure) = lines(fields)
    assert bad == "%d items ('not a number',)"
    assert (
        level == "ERROR"
        and failure.startswith("lookup failed\nTraceback")
        and "KeyError" in failure
    )


def test_no_handler_is_added_to_the_root_logger() -> None:
    # A root handler would make logging.basicConfig() a no-op and silence logging.lastResort.
    before = list(logging.getLogger().handlers)
    aggregate_logging()
    assert logging.getLogger().handlers == before


def test_invalid_options_are_rejected() -> None:
    with pytest.raises(TypeError):
        aggregate_logging(level="INFO")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        aggregate_logging(reduced_logging=3)  # type: ignore[arg-type]
