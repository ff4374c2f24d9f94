"""Handles the Worker returns: Execution (one perform) and Schedule (a timer, interval or receive).

Both are resolved by the worker's executor threads; waiting on either uses one condition for the
whole process (Execution's is in the core), because waiting is rare and a lock per execution is
not free.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from workhorse import _checks, _core
from workhorse.status import Status

if TYPE_CHECKING:
    from workhorse.worker import Worker

__all__ = ["Execution", "Schedule"]

_done_cond = threading.Condition()


def _after_fork_in_child() -> None:
    global _done_cond
    _done_cond = threading.Condition()  # another thread may have held it at the fork


if sys.platform != "win32":  # no fork on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)


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
    if _core.finish_unstarted(records, Status.UNAVAILABLE, error):
        with _done_cond:
            _done_cond.notify_all()


class Schedule:
    """Handle of a timer, interval or receive schedule: `cancel()`, `done()`, `wait()`."""

    __slots__ = ("_worker", "key", "kind", "_ended", "_waiters", "_stop", "execution")

    def __init__(self, worker: Worker, key: int, kind: str) -> None:
        self._worker = worker
        self.key = key
        self.kind = kind
        self._ended = False
        self._waiters = 0
        self._stop = False
        self.execution: Execution | None = None

    def cancel(self) -> bool:
        """Stop the schedule; runs already started finish. False if it had already ended."""
        if self._ended:
            return False
        self._stop = True
        cancelled = self._worker._core.cancel(self.key)
        if self.kind in ("at", "in") and cancelled:
            if self.execution is not None:
                # It will never run: resolve it so nobody waits forever.
                self.execution._finish(Status.NO_RESPONSE, None)
            self._end()
        return cancelled

    @property
    def cancelled(self) -> bool:
        return self._stop

    def done(self) -> bool:
        """True once the schedule produces nothing more and its last run finished."""
        return self._ended

    def wait(self, timeout: float | None = None) -> bool:
        """Block until done() (a receive source closed, a timer ran); False on timeout."""
        timeout = _checks.timeout(timeout)
        end = None if timeout is None else time.monotonic() + timeout
        with _done_cond:
            self._waiters += 1
            try:
                while not self._ended:
                    remaining = None if end is None else end - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    _done_cond.wait(remaining)
            finally:
                self._waiters -= 1
        return True

    def _end(self) -> None:
        self._ended = True
        if self._waiters:
            with _done_cond:
                _done_cond.notify_all()

    def __repr__(self) -> str:
        return f"Schedule({self.kind}, key={self.key}, done={self._ended})"
