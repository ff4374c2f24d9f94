"""Observability adapters: prometheus, health, tracing, aggregate logging, request ids, steps.

Each is an Adapter (Callable[[Handler], Handler]) and returns an async handler around an async
one. The status rules run inside every adapter, so each sees the final job.ctx.status.
prometheus-client and opentelemetry-api are imported only when their adapter is created.
"""

from __future__ import annotations

from workhorse.adapters.health import HealthCheck, health
from workhorse.adapters.keys import REQUEST_ID, REQUEST_SIZE, RESPONSE_SIZE
from workhorse.adapters.logs import aggregate_logging
from workhorse.adapters.prometheus import prometheus, register_core_collector
from workhorse.adapters.queue_metrics import register_queue_collector
from workhorse.adapters.request_id import request_id
from workhorse.adapters.steps import step_timings
from workhorse.adapters.tracing import tracing

__all__ = [
    "REQUEST_ID",
    "REQUEST_SIZE",
    "RESPONSE_SIZE",
    "HealthCheck",
    "aggregate_logging",
    "health",
    "prometheus",
    "register_core_collector",
    "register_queue_collector",
    "request_id",
    "step_timings",
    "tracing",
]
