"""Plumbing shared by the adapters: before/after hooks around sync or async handlers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

from workhorse.errors import ArgError
from workhorse.job import Job
from workhorse.middleware import Handler, is_async_handler
from workhorse.status import Status

_S = TypeVar("_S")


def around(
    handler: Handler,
    before: Callable[[Job], _S],
    after: Callable[[Job, _S, BaseException | None], None],
) -> Handler:
    """Wrap handler so before(job) runs first and after(job, state, raised) always runs last."""
    if is_async_handler(handler):
        async_handler = cast(Callable[[Job], Awaitable[object]], handler)

        async def wrapped_async(job: Job) -> object:
            # The hooks run inside the coroutine so context variables they set are the task's own.
            state = before(job)
            try:
                result = await async_handler(job)
            except BaseException as exc:
                after(job, state, exc)
                raise
            after(job, state, None)
            return result

        return wrapped_async

    def wrapped(job: Job) -> object:
        state = before(job)
        try:
            result = handler(job)
        except BaseException as exc:
            after(job, state, exc)
            raise
        after(job, state, None)
        return result

    return wrapped


def final_status(job: Job, raised: BaseException | None) -> Status:
    """The final status, also when an adapter inside raised (as the worker will record it)."""
    status = job.ctx.status
    if raised is None:
        return status
    if isinstance(raised, ArgError):
        return Status.BAD_REQUEST
    return status if status >= 400 else Status.INTERNAL_ERROR


def is_failure(status: int) -> bool:
    """Server-side failures (5xx) and timeouts: what tracing and logging report as errors."""
    return status >= 500 or status == Status.TIMEOUT
