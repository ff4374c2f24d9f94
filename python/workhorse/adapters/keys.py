"""Context keys the adapters read and write (job.ctx.get(KEY) / job.ctx.set(KEY, value))."""

from __future__ import annotations

__all__ = [
    "COMMENT",
    "LOGGER",
    "OTEL_CONTEXT",
    "REQUEST_ID",
    "REQUEST_SIZE",
    "RESPONSE_SIZE",
    "TRACE_ID",
    "WORKER_NUMBER",
]

REQUEST_SIZE = "request_size"  # bytes; set by the handler, observed by prometheus()
RESPONSE_SIZE = "response_size"  # bytes; set by the handler, observed by prometheus()
REQUEST_ID = "request_id"  # set by request_id(), logged by aggregate_logging()
TRACE_ID = "trace_id"  # hex trace id, set by tracing(), logged by aggregate_logging()
OTEL_CONTEXT = "otel_context"  # an OpenTelemetry Context to use as the span's parent
LOGGER = "logger"  # the per-execution logger of aggregate_logging()
WORKER_NUMBER = "worker_number"  # 1-based, set by ConcurrentJob
COMMENT = "comment"  # free-form note a handler leaves for the aggregate log record
