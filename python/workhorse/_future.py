"""A concurrent.futures.Future whose state is guarded by one module-wide lock.

The stdlib Future creates a threading.Condition (a lock, a deque and bound methods, all tracked by
the garbage collector) for every call; in a burst of short calls that costs more than running them.
Here every LazyFuture's state is guarded by one re-entrant lock, `_LOCK`, and a Condition built on
that lock is made for a future only when a thread blocks in `result()` or `exception()` on it.

`concurrent.futures.wait` and `as_completed` take `f._condition` of every future and install a
waiter in `f._waiters`; for a LazyFuture `_condition` is `_LOCK` itself (re-entrant, so taking it
once per future is fine), so those functions cost no Condition per future either, and they keep
their exact semantics: while they hold `_LOCK` no future can change state, and every state change
notifies the installed waiters under it, as the stdlib's does under its per-future Condition.
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FuturesTimeoutError
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    PENDING,
    RUNNING,
    InvalidStateError,
)
from typing import Any, TypeVar

_T = TypeVar("_T")
_LOCK = threading.RLock()
_CANCELLED = (CANCELLED, CANCELLED_AND_NOTIFIED)
_DONE = (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)


def _after_fork_in_child() -> None:
    global _LOCK
    _LOCK = threading.RLock()  # another thread may have held it at the fork


if sys.platform != "win32":  # no fork on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)


class LazyFuture(Future[_T]):
    def __init__(self) -> None:  # noqa: D107 - deliberately skips Future.__init__
        self._cv: threading.Condition | None = None  # made when a thread blocks on this future
        self._state = PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        # The stdlib's waiter and callback lists, built on first use (always under _LOCK).
        self._w: list[Any] | None = None
        self._dc: list[Any] | None = None

    @property
    def _waiters(self) -> list[Any]:
        if self._w is None:
            self._w = []
        return self._w

    @_waiters.setter
    def _waiters(self, value: list[Any]) -> None:
        self._w = value

    @property
    def _done_callbacks(self) -> list[Any]:
        if self._dc is None:
            self._dc = []
        return self._dc

    @_done_callbacks.setter
    def _done_callbacks(self, value: list[Any]) -> None:
        self._dc = value

    @property  # read-only on purpose: the stdlib only enters and leaves it
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        # The stdlib's methods that use it as a lock (done, running, cancelled, repr,
        # add_done_callback, set_running_or_notify_cancel) and wait/as_completed take _LOCK; the
        # methods that would wait on or notify it are overridden below.
        return _LOCK  # type: ignore[return-value]

    def _block(self, timeout: float | None) -> None:
        """Wait (holding _LOCK) until this future is done or the timeout passes."""
        cv = self._cv
        if cv is None:
            cv = self._cv = threading.Condition(_LOCK)
        cv.wait(timeout)

    def _notify(self) -> None:
        # Holding _LOCK: wake the threads blocked on this future and the installed waiters.
        if self._cv is not None:
            self._cv.notify_all()

    def cancel(self) -> bool:
        with _LOCK:
            if self._state in (RUNNING, FINISHED):
                return False
            if self._state in _CANCELLED:
                return True
            self._state = CANCELLED
            self._notify()
        if self._dc:
            self._invoke_callbacks()  # type: ignore[attr-defined]
        return True

    def set_running_or_notify_cancel(self) -> bool:
        with _LOCK:
            if self._state == PENDING:
                self._state = RUNNING
                return True
        return super().set_running_or_notify_cancel()

    def set_result(self, result: _T) -> None:
        self._settle(result, None)

    def set_exception(self, exception: BaseException | None) -> None:
        self._settle(None, exception)

    def _settle(self, result: Any, exception: BaseException | None) -> None:
        with _LOCK:
            if self._state in _DONE:
                raise InvalidStateError(f"{self._state}: {self!r}")
            self._result = result
            self._exception = exception
            self._state = FINISHED
            self._notify()
            # The waiters installed by now (wait/as_completed install under _LOCK, after looking
            # at the state: any installed later saw FINISHED). They are told outside _LOCK: it
            # is one lock for every future, and a waiter's add_result takes its own lock and
            # wakes a thread; held across that, _LOCK would make every other thread queue.
            waiters = tuple(self._w) if self._w else ()
        for waiter in waiters:
            if exception is None:
                waiter.add_result(self)
            else:
                waiter.add_exception(self)
        if self._dc:
            self._invoke_callbacks()  # type: ignore[attr-defined]

    def done(self) -> bool:
        return self._state in _DONE  # one read of a str attribute: atomic under the GIL

    def result(self, timeout: float | None = None) -> _T:
        # FINISHED is final: no lock is needed to read a finished result.
        if self._state == FINISHED and self._exception is None:
            return self._result  # type: ignore[no-any-return]
        exc = self._finished(timeout)
        if exc is not None:
            try:
                raise exc
            finally:
                del exc  # break the frame -> exception -> traceback -> frame cycle
        return self._result  # type: ignore[no-any-return]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self._finished(timeout)

    def _finished(self, timeout: float | None) -> BaseException | None:
        """Wait until finished (at most timeout s) and give the call's exception or None;
        CancelledError if cancelled, concurrent.futures.TimeoutError if still pending."""
        with _LOCK:
            if self._state not in _DONE:
                self._block(timeout)
            if self._state in _CANCELLED:
                raise CancelledError()
            if self._state != FINISHED:
                raise FuturesTimeoutError()
            return self._exception
