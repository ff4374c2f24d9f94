"""Handlers, adapters (middleware) and the status rules applied around every handler."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
import weakref
from collections.abc import Awaitable, Callable

from workhorse.errors import ArgError
from workhorse.job import Job
from workhorse.queue.result import Result
from workhorse.status import Status

__all__ = [
    "Adapter",
    "Handler",
    "adapt",
    "apply_status_rules",
    "is_async_handler",
    "record_error",
    "run_safely",
    "unadapt",
]

Handler = Callable[[Job], object | Awaitable[object]]
Adapter = Callable[[Handler], Handler]

logger = logging.getLogger("workhorse")


# What adapt() built, by the identity of the handler it returned: the bare handler and the adapters
# around it, so that a Worker given an adapted handler can put the status rules inside those
# adapters too. Keyed by id() with a weak reference, not by hash/eq: class-based adapters often
# return unhashable handlers (dataclasses) or ones whose __eq__ would match another chain's.
_adapted: dict[int, tuple[weakref.ref[Handler], Handler, tuple[Adapter, ...]]] = {}


def _forget(key: int, ref: weakref.ref[Handler]) -> None:
    entry = _adapted.get(key)
    if entry is not None and entry[0] is ref:
        _adapted.pop(key, None)


def _forwarding(handler: Handler) -> Handler:
    # A plain function in front of a handler that takes no weak references (__slots__).
    if is_async_handler(handler):
        async_handler: Callable[[Job], Awaitable[object]] = handler  # type: ignore[assignment]

        async def forward_async(job: Job) -> object:
            return await async_handler(job)

        return forward_async

    def forward(job: Job) -> object:
        return handler(job)

    return forward


def adapt(handler: Handler, *adapters: Adapter) -> Handler:
    """Wrap handler in adapters; like go-work the last adapter is the outermost."""
    if not callable(handler):
        raise TypeError(f"handler must be callable, got {type(handler).__name__}")
    bare, applied = unadapt(handler)
    for adapter in adapters:
        if not callable(adapter):
            raise TypeError(f"adapter must be callable, got {type(adapter).__name__}")
        wrapped = adapter(handler)
        if not callable(wrapped):
            raise TypeError(f"adapter {adapter!r} returned {type(wrapped).__name__}, not a handler")
        handler = wrapped
    if adapters:
        try:
            ref = weakref.ref(handler, functools.partial(_forget, id(handler)))
        except TypeError:
            handler = _forwarding(handler)
            ref = weakref.ref(handler, functools.partial(_forget, id(handler)))
        _adapted[id(handler)] = (ref, bare, applied + adapters)
    return handler


def unadapt(handler: Handler) -> tuple[Handler, tuple[Adapter, ...]]:
    """The bare handler and the adapters adapt() put around it (none for a plain handler)."""
    entry = _adapted.get(id(handler))
    if entry is None or entry[0]() is not handler:
        return handler, ()
    return entry[1], entry[2]


def run_safely(fn: Callable[[], object], job: Job | None = None) -> BaseException | None:
    """Run fn; return what it raised (or None), setting INTERNAL_ERROR on job if one is given."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - returning the error is the point
        if job is not None:
            job.ctx.error = exc
            job.ctx.status = Status.INTERNAL_ERROR
        return exc
    return None


def is_async_handler(handler: object) -> bool:
    """True for `async def` functions and callables whose __call__ is one (through partials)."""
    while isinstance(handler, functools.partial):
        handler = handler.func
    if inspect.iscoroutinefunction(handler):
        return True
    call = getattr(handler, "__call__", None)  # noqa: B004 - we want the method itself
    return call is not None and inspect.iscoroutinefunction(call)


def record_error(job: Job, exc: BaseException, log: logging.Logger = logger) -> None:
    """Keep what the handler raised on its context, set the status it implies, log it."""
    ctx = job.ctx
    ctx.error = exc
    if isinstance(exc, ArgError):
        ctx.status = Status.BAD_REQUEST
    elif ctx.status < 400:
        ctx.status = Status.INTERNAL_ERROR
    log.error(
        "handler %r raised %s: %s",
        job.handler,
        type(exc).__name__,
        exc,
        exc_info=(type(exc), exc, exc.__traceback__),
    )


class _HandlerExit(Exception):
    """Carries a SystemExit/KeyboardInterrupt out of a handler's task without stopping the loop."""


async def _contained(awaitable: Awaitable[object]) -> object:
    # asyncio re-raises SystemExit and KeyboardInterrupt out of the event loop when a task raises
    # them; inside the task they become an ordinary error of this one execution.
    try:
        return await awaitable
    except (SystemExit, KeyboardInterrupt) as exc:
        raise _HandlerExit() from exc


_UNKNOWN, _SUCCESS, _TIMEOUT = Status.UNKNOWN, Status.SUCCESS, Status.TIMEOUT


def _take_result(job: Job, result: object) -> None:
    # A queued job's handler returned a wh.Result: kept for the outcome; its status is what the
    # adapters see (a retry is UNAVAILABLE, dead is INTERNAL_ERROR).
    ctx = job.ctx
    ctx._result = result
    kind = result.kind  # type: ignore[attr-defined]
    if ctx._status < 400:
        if kind == "retry":
            ctx._status = Status.UNAVAILABLE
        elif kind == "dead":
            ctx._status = Status.INTERNAL_ERROR


def _finish(job: Job) -> None:
    ctx = job.ctx
    deadline = ctx.deadline
    if deadline is not None and time.monotonic() >= deadline and ctx._status != _TIMEOUT:
        # Ran past job.timeout: the late result is discarded.
        ctx._status = _TIMEOUT
        ctx._cancelled = True
    elif ctx._status is _UNKNOWN:
        ctx._status = _SUCCESS


def apply_status_rules(handler: Handler, log: logging.Logger = logger) -> Handler:
    """Wrap the bare handler so every adapter around it sees the final status on the way out."""
    if is_async_handler(handler):
        async_handler: Callable[[Job], Awaitable[object]] = handler  # type: ignore[assignment]

        async def ruled_async(job: Job) -> object:
            ctx = job.ctx
            result: object = None
            try:
                if ctx.deadline is None:
                    # Awaited here, a SystemExit it raises is caught below like any error;
                    # only wait_for's inner task needs _contained.
                    result = await async_handler(job)
                else:
                    remaining = max(ctx.deadline - time.monotonic(), 0.0)
                    result = await asyncio.wait_for(_contained(async_handler(job)), remaining)
                if result is not None and type(result) is Result:
                    _take_result(job, result)
            except (asyncio.TimeoutError, TimeoutError) as exc:
                if ctx.deadline is not None and time.monotonic() >= ctx.deadline:
                    ctx.status = Status.TIMEOUT
                    ctx.cancel()
                else:
                    record_error(job, exc, log)
            except _HandlerExit as exc:
                record_error(job, exc.__cause__ or exc, log)
            except asyncio.CancelledError:
                raise  # the worker is stopping this execution
            except BaseException as exc:  # noqa: BLE001 - a handler error never kills the worker
                record_error(job, exc, log)
            _finish(job)
            return result

        return ruled_async

    def ruled(job: Job) -> object:
        result: object = None
        try:
            result = handler(job)
            if result is not None and type(result) is Result:
                _take_result(job, result)
        except BaseException as exc:  # noqa: BLE001 - SystemExit in a handler must not kill a thread
            record_error(job, exc, log)
        _finish(job)
        return result

    return ruled
