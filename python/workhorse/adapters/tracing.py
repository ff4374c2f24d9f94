"""OpenTelemetry tracing: one CONSUMER span per execution, messaging semantic conventions."""

from __future__ import annotations

from contextvars import Token
from typing import TYPE_CHECKING

from workhorse.adapters._wrap import around, final_status, is_failure
from workhorse.adapters.keys import OTEL_CONTEXT, TRACE_ID
from workhorse.job import Job
from workhorse.middleware import Adapter, Handler
from workhorse.queue.context import add_provider

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, TracerProvider

__all__ = ["tracing"]


def tracing(tracer_provider: TracerProvider | None = None, *, system: str = "workhorse") -> Adapter:
    """Adapter tracing each execution as a span named "process <queue>", child of the job's parent.

    Creating it also traces enqueues into durable queues: a PRODUCER span "send <name>" whose
    context is stored with the job, so the job's CONSUMER span is its child.

    The parent is the ctx value "otel_context" (an OpenTelemetry Context) or else the W3C
    job.args["traceparent"] (with "tracestate"), extracted with the global propagator. The hex
    trace id is put on ctx["trace_id"]; timeouts and 5xx statuses mark the span as an error.
    """
    try:
        from opentelemetry import context as otel_context
        from opentelemetry import propagate, trace
        from opentelemetry.trace import SpanKind, StatusCode
        from opentelemetry.trace.status import Status as SpanStatus
    except ImportError as exc:
        raise ImportError("tracing needs opentelemetry-api: pip install workhorse[otel]") from exc
    if tracer_provider is not None and not isinstance(tracer_provider, trace.TracerProvider):
        hint = ""
        if isinstance(tracer_provider, trace.Tracer):
            hint = "; pass the TracerProvider it came from, not the Tracer"
        raise TypeError(
            f"tracer_provider must be an opentelemetry TracerProvider or None, "
            f"got {type(tracer_provider).__name__}{hint}"
        )
    if not isinstance(system, str) or not system:
        raise TypeError(f"system must be a non-empty str, got {system!r}")
    tracer = trace.get_tracer("workhorse", tracer_provider=tracer_provider)

    def produce(name: str) -> dict[str, str]:
        # A queued job's enqueue: a PRODUCER span whose context travels with the job, so the
        # CONSUMER span that processes it is its child.
        with tracer.start_as_current_span(
            f"send {name}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": system,
                "messaging.operation.name": "send",
                "messaging.operation.type": "send",
                "messaging.destination.name": name,
            },
        ):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
        return {k: v for k, v in carrier.items() if k in ("traceparent", "tracestate")}

    add_provider("otel", produce)

    def parent_of(job: Job) -> Context | None:
        parent: Context | None = job.ctx.get(OTEL_CONTEXT)
        if parent is None:
            # Carried from the enqueuing code (a queued job's meta), else given in the args.
            source = getattr(job, "meta", None) or job.args
            traceparent = source.get("traceparent")
            if isinstance(traceparent, str):
                carrier = {"traceparent": traceparent}
                tracestate = source.get("tracestate")
                if isinstance(tracestate, str):
                    carrier["tracestate"] = tracestate
                parent = propagate.extract(carrier)
        return parent

    def before(job: Job) -> tuple[Span, Token[Context]]:
        parent = parent_of(job)
        span = tracer.start_span(
            # Messaging semconv: "{messaging.operation.name} {destination}", e.g. "process default".
            f"process {job.queue}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": system,
                "messaging.operation.name": "process",
                "messaging.operation.type": "process",
                "messaging.destination.name": job.queue,
                "messaging.message.id": job.id,
                "workhorse.handler": job.handler,
            },
        )
        span_context = span.get_span_context()
        if span_context.is_valid:
            job.ctx.set(TRACE_ID, format(span_context.trace_id, "032x"))
        # Attached so spans the handler starts become children of this one.
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return span, token

    def after(job: Job, state: tuple[Span, Token[Context]], raised: BaseException | None) -> None:
        span, token = state
        otel_context.detach(token)
        status = final_status(job, raised)
        span.set_attribute("workhorse.status", int(status))
        if is_failure(status):
            error = raised if raised is not None else job.ctx.error
            if error is not None:
                span.record_exception(error)
                span.set_attribute("error.type", type(error).__qualname__)
                description = f"{type(error).__name__}: {error}"
            else:
                span.set_attribute("error.type", str(int(status)))
                description = f"status {int(status)}"
            span.set_status(SpanStatus(StatusCode.ERROR, description))
        span.end()

    def adapter(handler: Handler) -> Handler:
        return around(handler, before, after)

    return adapter
