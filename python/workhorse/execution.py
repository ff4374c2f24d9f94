"""Handles the Worker returns: Execution (one perform) and Schedule (a timer, interval or receive).

Both are Rust objects (rust/src/execution.rs) resolved by the worker's executor threads; waiting
on either uses one condition for the whole process, in the core, because waiting is rare and a
lock per execution is not free.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING

from workhorse import _core
from workhorse.status import Status

if TYPE_CHECKING:
    pass

__all__ = ["Execution", "Schedule"]

# Handle of one asynchronous perform: `wait()`, `done()`, `status`, `error`, `await`. A Rust
# object (rust/src/execution.rs): one is made per perform, and the core's executor loop starts
# and resolves it without running Python. Its API is documented in _core.pyi.
Execution = _core.Execution


async def _wait_async(execution: Execution) -> Status:
    """`await execution`: its status once done (TIMEOUT once the job's deadline passes)."""
    if execution._done:
        return execution._status
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Status] = loop.create_future()
    execution._awaiters().append(fut)
    if execution._done and not fut.done():  # finished while we registered
        fut.set_result(execution._status)
    if execution.job.timeout is None:
        return await fut
    # The deadline is only known once the execution starts: look again every 50 ms.
    while True:
        try:
            return await asyncio.wait_for(asyncio.shield(fut), 0.05)
        except (asyncio.TimeoutError, TimeoutError):
            if execution._past_deadline():
                return Status.TIMEOUT


def _resolve(fut: asyncio.Future[Status], status: Status) -> None:
    if not fut.done():
        fut.set_result(status)


def _tell_awaiters(futures: list[asyncio.Future[Status]], status: Status) -> None:
    """Resolve the asyncio futures of an execution's awaiters, each on its own loop."""
    for fut in futures:
        try:
            fut.get_loop().call_soon_threadsafe(_resolve, fut, status)
        except RuntimeError:
            pass  # the awaiter's event loop is closed: nobody is left to tell


def finish_unstarted(records: Iterable[object], error: BaseException) -> None:
    """Resolve executions that never started (a stop) as UNAVAILABLE with `error`, and end their
    schedules: what `_finish` does for one, with one wake-up of the waiters for all of them.
    Records that are not Executions (Executor calls: Futures) are cancelled instead. The core
    does it (rust/src/execution.rs): a stop may find a million of them."""
    _core.finish_unstarted(records, Status.UNAVAILABLE, error)


# Handle of a timer, interval or receive schedule: `cancel()`, `done()`, `wait()`. A Rust object
# (rust/src/execution.rs): one per perform_in, and a million pending is a use case.
Schedule = _core.Schedule
