"""Health check: the endpoint turns 500 when recent executions fail too often (go-work's)."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import cast

from workhorse import _checks, _core
from workhorse.adapters._wrap import around, final_status
from workhorse.job import Job
from workhorse.middleware import Handler, is_async_handler
from workhorse.status import Status

__all__ = ["HealthCheck", "health"]

logger = logging.getLogger("workhorse")

OK, DOWN = 200, 500
_FINAL = frozenset(int(s) for s in Status if s != Status.UNKNOWN)


def _fraction(pct: float) -> float:
    if isinstance(pct, bool) or not isinstance(pct, (int, float)):
        raise TypeError(f"pct must be a number, got {type(pct).__name__}")
    if not 0.0 <= pct <= 1.0:
        raise ValueError(f"pct is a fraction of executions in 0..1, got {pct!r}")
    return float(pct)


def _minutes(minutes: float) -> float:
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)):
        raise TypeError(f"minutes must be a number, got {type(minutes).__name__}")
    if not 0 < minutes < math.inf:
        raise ValueError(f"minutes must be > 0 and finite, got {minutes!r}")
    return float(minutes)


def _statuses(value: Iterable[int]) -> frozenset[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(
            f"error_statuses must be a collection of status codes, got {type(value).__name__}"
        )
    codes = list(value)
    for code in codes:
        if isinstance(code, bool) or not isinstance(code, int):
            raise TypeError(f"error_statuses must hold int status codes, got {code!r}")
        if code not in _FINAL:
            # ctx.status stores another code as its class (404 -> 400): it would never match.
            raise ValueError(
                f"error_statuses: {code!r} is never a final status; "
                f"final statuses are {', '.join(str(s) for s in sorted(_FINAL))}"
            )
    return frozenset(int(code) for code in codes)


def _now(clock: Callable[[], float]) -> float:
    if not callable(clock):
        raise TypeError(f"clock must be callable, got {type(clock).__name__}")
    now = clock()
    if isinstance(now, bool) or not isinstance(now, (int, float)):
        raise TypeError(f"clock must return seconds (int or float), got {type(now).__name__}")
    return now


def _count(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")
    return value


class HealthCheck:
    """Health from the error percentage of recent executions, by time window or by count.

    Every final status is recorded; the status is recomputed at most every recompute_interval
    seconds (on an execution or a read), so a single failure does not flip it. Unhealthy means
    the share of error statuses is above pct and at least min_count executions were counted.
    """

    def __init__(
        self,
        error_statuses: Iterable[int] = (Status.TIMEOUT, Status.INTERNAL_ERROR, Status.UNAVAILABLE),
        recompute_interval: float | timedelta = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._errors = _statuses(error_statuses)
        self._interval = _checks.delay(recompute_interval, "recompute_interval")
        now = _now(clock)
        self._clock = clock
        self._lock = threading.Lock()
        self._status = OK
        # The counting is the core's (rust/src/adapters.rs): the window's buckets or the last
        # executions, and when the next recompute is due. It reads time.monotonic natively.
        self._tally = _core.HealthTally(
            self._errors, None if clock is time.monotonic else clock, now + self._interval
        )
        self.error_percentage()

    def error_percentage(
        self, pct: float = 1.0, minutes: float = 15, *, min_count: int = 5
    ) -> HealthCheck:
        """Judge by the executions of the last `minutes` minutes; returns self."""
        pct = _fraction(pct)
        minutes = _minutes(minutes)
        min_count = _count("min_count", min_count, 0)
        with self._lock:
            self._pct, self._min = pct, min_count
            self._tally.by_window(minutes)
        return self

    def error_percentage_by_count(
        self, pct: float = 1.0, min_count: int = 5, last_n: int = 15
    ) -> HealthCheck:
        """Judge by the last `last_n` executions, once at least min_count ran; returns self."""
        pct = _fraction(pct)
        last_n = _count("last_n", last_n, 1)
        min_count = _count("min_count", min_count, 0)
        if min_count > last_n:
            raise ValueError(f"min_count ({min_count}) can never be reached with last_n={last_n}")
        with self._lock:
            self._pct, self._min = pct, min_count
            self._tally.by_count(last_n)
        return self

    def record(self, status: int) -> None:
        """Count one final status (the adapter calls this after every execution)."""
        now = self._tally.record(int(status))
        if now is not None:
            self._recompute(now)

    def _recompute(self, now: float) -> None:
        # Called by whoever the tally told a recompute is due (one caller at a time).
        with self._lock:
            self._tally.set_next(now + self._interval)
            total, errors = self._tally.totals(now)
            share = errors / total if total else 0.0
            status = DOWN if total >= self._min and share > self._pct else OK
            if status != self._status:
                log = logger.error if status == DOWN else logger.info
                log(
                    "health %s: %d of %d recent executions failed (allowed %.0f%%)",
                    "DOWN" if status == DOWN else "OK",
                    errors,
                    total,
                    self._pct * 100,
                )
            self._status = status

    @property
    def status(self) -> int:
        """200 or 500; recomputed first when recompute_interval has passed."""
        now = self._clock()
        if self._tally.take_due(now):
            self._recompute(now)
        return self._status

    @status.setter
    def status(self, value: int) -> None:
        if value not in (OK, DOWN):
            raise ValueError(f"health status is 200 or 500, got {value!r}")
        self._status = int(value)

    def endpoint(self) -> tuple[int, bytes]:
        """(200, b"OK") or (500, b"DOWN"), for an HTTP health path."""
        status = self.status
        return status, b"OK" if status == OK else b"DOWN"

    def adapter(self, handler: Handler) -> Handler:
        """Adapter recording every final status into this health check."""
        if not is_async_handler(handler):
            # The core counts (rust/src/adapters.rs), with no Python frame an execution.
            return cast(Handler, self._tally.wrap(handler, final_status, self._recompute))

        def after(job: Job, _: None, raised: BaseException | None) -> None:
            self.record(final_status(job, raised))

        return around(handler, _nothing, after)

    __call__ = adapter


def _nothing(job: Job) -> None:
    return None


def health(
    pct: float = 1.0,
    minutes: float = 15,
    *,
    last_n: int | None = None,
    min_count: int = 5,
    error_statuses: Iterable[int] = (Status.TIMEOUT, Status.INTERNAL_ERROR, Status.UNAVAILABLE),
    recompute_interval: float | timedelta = 60.0,
    clock: Callable[[], float] = time.monotonic,
) -> HealthCheck:
    """A HealthCheck judging by time window, or by the last last_n executions when given."""
    check = HealthCheck(error_statuses, recompute_interval, clock=clock)
    _minutes(minutes)  # checked also when last_n judges instead
    if last_n is None:
        return check.error_percentage(pct, minutes, min_count=min_count)
    return check.error_percentage_by_count(pct, min_count, last_n)
