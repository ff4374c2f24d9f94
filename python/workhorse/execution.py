"""Handles the Worker returns: Execution (one perform) and Schedule (a timer, interval or receive).

Both are resolved by the worker's executor threads; waiting on them uses one condition for the
whole process, because waiting is rare and a lock per execution is not free.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Generator, Iterable
from typing import TYPE_CHECKING, Any

from workhorse import _checks, _core
from workhorse.job import Context, Job
from workhorse.status import Status

if TYPE_CHECKING:
    from workhorse.worker import Worker

__all__ = ["Execution", "Schedule"]

_done_cond = threading.Condition()
_settle = _core.settle


def _after_fork_in_child() -> None:
    global _done_cond
    _done_cond = threading.Condition()  # another thread may have held it at the fork


if sys.platform != "win32":  # no fork on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Execution:
    """Handle of one asynchronous perform: `wait()`, `done()`, `status`, `error`, `await`."""

    __slots__ = (
        "job",
        "_ctx",
        "schedule",
        "_status",
        "error",
        "_done",
        "_waiters",
        "_futures",
    )

    def __init__(self, job: Job, schedule: Schedule | None = None) -> None:
        # The job this execution runs: the job performed, or its fork when another execution of
        # the same Job object was running when this one started. _ctx is this execution's own.
        # The handler is not kept here (the worker looks it up by the job's handler name when it
        # runs): a handle that refers to nothing tracked stays out of the cyclic GC.
        self.job = job
        self._ctx: Context | None = None
        self.schedule = schedule
        self._status = Status.UNKNOWN
        self.error: BaseException | None = None
        self._done = False
        self._waiters = 0
        self._futures: list[asyncio.Future[Status]] | None = None
        _settle(self)

    @property
    def status(self) -> Status:
        """The final status once done; TIMEOUT once the job's deadline passed; else UNKNOWN."""
        if not self._done and self._past_deadline():
            return Status.TIMEOUT
        return self._status

    def done(self) -> bool:
        return self._done

    def _past_deadline(self) -> bool:
        ctx = self._ctx
        deadline = None if ctx is None else ctx.deadline
        return deadline is not None and time.monotonic() >= deadline

    def _finish(self, status: Status, error: BaseException | None) -> None:
        self._status = status
        self.error = error
        self._done = True
        if self._waiters:
            with _done_cond:
                _done_cond.notify_all()
        if self._futures:
            _tell_awaiters(self._futures, status)
        schedule = self.schedule
        if schedule is not None:
            # The schedule keeps its execution; dropping the way back leaves no reference cycle.
            self.schedule = None
            schedule._end()
        _settle(self)  # tracked again if it holds an error, or a job the collector must see

    def wait(self, timeout: float | None = None) -> Status:
        """Block until done (TIMEOUT once the job's deadline passes); never raises its error."""
        if self._done and timeout is None:
            return self._status
        timeout = _checks.timeout(timeout)
        end = None if timeout is None else time.monotonic() + timeout
        with _done_cond:
            self._waiters += 1
            try:
                while not self._done:
                    if self._past_deadline():
                        return Status.TIMEOUT
                    now = time.monotonic()
                    if end is not None and now >= end:
                        break
                    # Re-check at the deadline, which is only known once the execution starts.
                    slice_ = 0.05 if self.job.timeout is not None else None
                    remaining = None if end is None else end - now
                    if slice_ is not None:
                        remaining = slice_ if remaining is None else min(slice_, remaining)
                    _done_cond.wait(remaining)
            finally:
                self._waiters -= 1
        return self.status

    def __await__(self) -> Generator[Any, None, Status]:
        return self._wait_async().__await__()

    async def _wait_async(self) -> Status:
        if self._done:
            return self._status
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Status] = loop.create_future()
        with _done_cond:
            if self._futures is None:
                self._futures = []
            self._futures.append(fut)
            _settle(self)  # its awaiters' futures can close a cycle back to it
        if self._done and not fut.done():  # finished while we registered
            fut.set_result(self._status)
        if self.job.timeout is None:
            return await fut
        # The deadline is only known once the execution starts: look again every 50 ms.
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(fut), 0.05)
            except (asyncio.TimeoutError, TimeoutError):
                if self._past_deadline():
                    return Status.TIMEOUT

    def __repr__(self) -> str:
        return f"Execution({self.job.handler!r}, status={self.status!r})"


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
    Records that are not Executions (Executor calls: Futures) are cancelled instead."""
    status = Status.UNAVAILABLE
    notify = False
    for ex in records:
        if type(ex) is not Execution:
            ex.cancel()  # type: ignore[attr-defined]
            continue
        ex._status = status
        ex.error = error
        ex._done = True
        if ex._waiters:
            notify = True
        if ex._futures:
            _tell_awaiters(ex._futures, status)
        schedule = ex.schedule
        if schedule is not None:
            ex.schedule = None
            schedule._ended = True
            if schedule._waiters:
                notify = True
    if notify:
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
