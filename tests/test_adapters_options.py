"""Every adapter factory checks every option when it is built: a wrong type is a TypeError and a
wrong value a ValueError, each naming the option, never a failure of every execution later."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from support import run

from workhorse.adapters import (
    aggregate_logging,
    health,
    prometheus,
    register_core_collector,
    request_id,
    step_timings,
    tracing,
)
from workhorse.adapters.health import HealthCheck
from workhorse.adapters.prometheus import CoreCollector
from workhorse.job import Job
from workhorse.middleware import adapt, apply_status_rules
from workhorse.status import Status


def _no_figures() -> list[tuple[str, dict[str, float]]]:
    return []


def _text_clock() -> str:
    return "now"


# (factory, keyword arguments, the exception, the option the message must name)
CASES: list[tuple[Callable[..., Any], dict[str, Any], type[Exception], str]] = [
    # aggregate_logging
    (aggregate_logging, {"logger": 42}, TypeError, "logger"),
    (aggregate_logging, {"logger": print}, TypeError, "logger"),
    # A LoggerAdapter replaces the record's extra with its own: the job fields would be lost.
    (
        aggregate_logging,
        {"logger": logging.LoggerAdapter(logging.getLogger("x"), {})},
        TypeError,
        "logger",
    ),
    (aggregate_logging, {"level": "INFO"}, TypeError, "level"),
    (aggregate_logging, {"level": True}, TypeError, "level"),
    (aggregate_logging, {"level": -1}, ValueError, "level"),
    (aggregate_logging, {"reduced_logging": 3}, TypeError, "reduced_logging"),
    (aggregate_logging, {"silent_success": "no"}, TypeError, "silent_success"),
    (aggregate_logging, {"silent_no_response": 1}, TypeError, "silent_no_response"),
    (aggregate_logging, {"utc": "yes"}, TypeError, "utc"),
    # prometheus
    (prometheus, {"registry": "x"}, TypeError, "registry"),
    (prometheus, {"registry": {}}, TypeError, "registry"),
    (prometheus, {"namespace": 3}, TypeError, "namespace"),
    (prometheus, {"namespace": "no-dashes"}, ValueError, "namespace"),
    (prometheus, {"subsystem": None}, TypeError, "subsystem"),
    (prometheus, {"subsystem": "1st"}, ValueError, "subsystem"),
    (prometheus, {"ignore": "email"}, TypeError, "ignore"),
    (prometheus, {"ignore": 3}, TypeError, "ignore"),
    (prometheus, {"ignore": [1]}, TypeError, "ignore"),
    (prometheus, {"ignore": [["email"]]}, TypeError, "ignore"),
    # register_core_collector and its collector
    (register_core_collector, {"registry": "x"}, TypeError, "registry"),
    (register_core_collector, {"namespace": 3}, TypeError, "namespace"),
    (register_core_collector, {"namespace": "a b"}, ValueError, "namespace"),
    (CoreCollector, {"sources": 3}, TypeError, "sources"),
    (CoreCollector, {"sources": _no_figures, "jobs": 3}, TypeError, "jobs"),
    (CoreCollector, {"sources": _no_figures, "namespace": 3}, TypeError, "namespace"),
    # step_timings
    (step_timings, {"registry": "x"}, TypeError, "registry"),
    (step_timings, {"namespace": 3}, TypeError, "namespace"),
    (step_timings, {"namespace": "no-dashes"}, ValueError, "namespace"),
    # tracing
    (tracing, {"tracer_provider": TracerProvider().get_tracer("t")}, TypeError, "tracer_provider"),
    (tracing, {"tracer_provider": "x"}, TypeError, "tracer_provider"),
    (tracing, {"system": ""}, TypeError, "system"),
    (tracing, {"system": 3}, TypeError, "system"),
    # request_id
    (request_id, {"header": ""}, TypeError, "header"),
    (request_id, {"header": 3}, TypeError, "header"),
    # health and HealthCheck
    (health, {"pct": "50%"}, TypeError, "pct"),
    (health, {"pct": 1.5}, ValueError, "pct"),
    (health, {"pct": math.nan}, ValueError, "pct"),
    (health, {"minutes": "5"}, TypeError, "minutes"),
    (health, {"minutes": 0}, ValueError, "minutes"),
    (health, {"minutes": math.inf}, ValueError, "minutes"),
    (health, {"minutes": "5", "last_n": 3}, TypeError, "minutes"),
    (health, {"last_n": "3"}, TypeError, "last_n"),
    (health, {"last_n": 0}, ValueError, "last_n"),
    (health, {"min_count": -1}, ValueError, "min_count"),
    (health, {"error_statuses": 500}, TypeError, "error_statuses"),
    (health, {"error_statuses": "500"}, TypeError, "error_statuses"),
    (health, {"error_statuses": ["500"]}, TypeError, "error_statuses"),
    (health, {"error_statuses": [500.5]}, TypeError, "error_statuses"),
    (health, {"error_statuses": [True]}, TypeError, "error_statuses"),
    # A final status is always a Status member (404 is recorded as 400): 404 would never count.
    (health, {"error_statuses": [404]}, ValueError, "error_statuses"),
    (health, {"recompute_interval": "60"}, TypeError, "recompute_interval"),
    (health, {"recompute_interval": -1}, ValueError, "recompute_interval"),
    (health, {"recompute_interval": math.nan}, ValueError, "recompute_interval"),
    (health, {"recompute_interval": math.inf}, ValueError, "recompute_interval"),
    (health, {"clock": 3}, TypeError, "clock"),
    (health, {"clock": _text_clock}, TypeError, "clock"),
    (HealthCheck, {"error_statuses": [404]}, ValueError, "error_statuses"),
    (HealthCheck, {"clock": 3}, TypeError, "clock"),
]


def _id(case: tuple[Callable[..., Any], dict[str, Any], type[Exception], str]) -> str:
    factory, kwargs, _, option = case
    value = kwargs[option]
    shown = getattr(value, "__name__", None) or repr(value)
    if shown.startswith("<"):  # an object's repr carries its address: not a stable test id
        shown = type(value).__name__
    return f"{factory.__name__}-{option}={shown}"[:60]


@pytest.mark.parametrize(("factory", "kwargs", "error", "option"), CASES, ids=map(_id, CASES))
def test_a_wrong_option_is_rejected_when_the_adapter_is_built(
    factory: Callable[..., Any],
    kwargs: dict[str, Any],
    error: type[Exception],
    option: str,
    registry: CollectorRegistry,
) -> None:
    if factory in (prometheus, step_timings, register_core_collector):
        kwargs = {"registry": registry, **kwargs}  # never the process-wide default registry
    with pytest.raises(error, match=rf"\b{option}\b"):
        factory(**kwargs)


def test_a_logger_name_is_the_logger_of_that_name() -> None:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    named = logging.getLogger("test.options.jobs")
    named.addHandler(handler)
    named.setLevel(logging.INFO)
    try:
        by_name = aggregate_logging(logger="test.options.jobs")
        h = adapt(apply_status_rules(lambda job: None), by_name)
        assert run(h, Job("email")) == 200
    finally:
        named.removeHandler(handler)
    (record,) = records
    assert record.name == "test.options.jobs"
    assert record.getMessage().startswith("job email 200 in ")


def test_good_options_are_accepted(registry: CollectorRegistry) -> None:
    aggregate_logging(logger=logging.getLogger("x"), level=logging.DEBUG, silent_success=True)
    aggregate_logging(logger="")  # the root logger, as logging.getLogger("") is
    prometheus(registry=registry, namespace="app", subsystem="", ignore=["health", "ping"])
    step_timings(registry=registry, namespace="app")
    tracing(TracerProvider(), system="billing")
    tracing(None)
    request_id("X-Request-Id")
    health(0.5, 2.5, error_statuses=[500, 408], recompute_interval=0, clock=lambda: 1.0)
    health(
        last_n=10, error_statuses={Status.INTERNAL_ERROR}, recompute_interval=timedelta(seconds=5)
    )
