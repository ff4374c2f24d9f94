"""A concurrent.futures.Future that builds its Condition only when a thread waits on it.

The stdlib Future creates a threading.Condition (a lock, a deque and bound methods, all tracked by
the garbage collector) for every call; in a burst of short calls that costs more than running them.
Until someone waits, state changes are guarded by one module-wide lock instead; once the Condition
exists every method takes the stdlib's path, so waiters, callbacks, `wait` and `as_completed` keep
their exact semantics.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
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
_LAZY = threading.Lock()


class LazyFuture(Future[_T]):
    def __init__(self) -> None:  # noqa: D107 - deliberately skips Future.__init__
        self._cond: threading.Condition | None = None
        self._state = PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        # The stdlib's waiter and callback lists, also built on first use: the stdlib only
        # touches them holding the Condition, so two threads never build them at once.
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

    @property  # read-only on purpose: created on first use
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        cond = self._cond
        if cond is None:
            with _LAZY:
                cond = self._cond
                if cond is None:
                    cond = self._cond = threading.Condition()
        return cond

    def set_running_or_notify_cancel(self) -> bool:
        with _LAZY:
            if self._cond is None:
                if self._state == CANCELLED:
                    self._state = CANCELLED_AND_NOTIFIED
                    return False
                if self._state == PENDING:
                    self._state = RUNNING
                    return True
        return super().set_running_or_notify_cancel()

    def set_result(self, result: _T) -> None:
        if not self._settle(result, None):
            super().set_result(result)

    def set_exception(self, exception: BaseException | None) -> None:
        if not self._settle(None, exception):
            super().set_exception(exception)

    def _settle(self, result: Any, exception: BaseException | None) -> bool:
        """Finish without a Condition when nobody waits; False to take the stdlib's path."""
        with _LAZY:
            if self._cond is not None:
                return False
            if self._state in (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED):
                raise InvalidStateError(f"{self._state}: {self!r}")
            self._result = result
            self._exception = exception
            self._state = FINISHED
        if self._dc:
            self._invoke_callbacks()  # type: ignore[attr-defined]
        return True

    def done(self) -> bool:
        if self._state in (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED):
            return True
        return super().done()

    def result(self, timeout: float | None = None) -> _T:
        # FINISHED is final: no lock is needed to read a finished result.
        if self._state == FINISHED and self._exception is None:
            return self._result  # type: ignore[no-any-return]
        return super().result(timeout)
