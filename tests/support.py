"""Helpers shared by the tests: deadline-bounded polling, and running an adapted handler without
a Worker (the adapter tests)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from workhorse.job import Job
from workhorse.middleware import Handler, is_async_handler
from workhorse.status import Status


def poll_until(pred: Callable[[], object], timeout: float = 2.0, interval: float = 0.002) -> bool:
    """Poll pred until it is truthy (True) or timeout seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


async def apoll_until(
    pred: Callable[[], object], timeout: float = 2.0, interval: float = 0.002
) -> bool:
    """poll_until for coroutines: yields to the event loop between looks."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)


def run(handler: Handler, job: Job) -> Status:
    """Call handler(job), driving it to the end if it is async; the job's final status."""
    out = handler(job)
    if asyncio.iscoroutine(out):
        asyncio.run(out)
    return job.ctx.status


def status_observer(seen: list[Status]) -> Callable[[Handler], Handler]:
    """An adapter that appends the status it sees on the way out (sync or async handlers)."""

    def observe(next_handler: Handler) -> Handler:
        if is_async_handler(next_handler):

            async def observed_async(job: Job) -> object:
                try:
                    return await next_handler(job)  # type: ignore[misc]
                finally:
                    seen.append(job.ctx.status)

            return observed_async

        def observed(job: Job) -> object:
            try:
                return next_handler(job)
            finally:
                seen.append(job.ctx.status)

        return observed

    return observe
