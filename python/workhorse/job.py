"""Job, its per-execution Context, the worker's Session and step timings."""

from __future__ import annotations

import copy as _copy
import gc
import itertools
import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, TypeVar

from workhorse import _checks, _core
from workhorse.errors import ArgError
from workhorse.status import Status, as_status

__all__ = ["Context", "Job", "Session", "Trace"]

_T = TypeVar("_T")
_MISSING: Any = object()

# Job ids are unique per process without paying for uuid4 on every execution; a forked child
# draws a new prefix (its pid), so parent and child never make the same id.
_ids = itertools.count(1)
_id_prefix = f"{os.getpid():x}-{int(time.time() * 1000):x}"

# One condition for every Context.wait_cancelled(): cancelling is rare, a lock per context is not.
_cancel_cond = threading.Condition()


def _after_fork_in_child() -> None:
    global _id_prefix, _cancel_cond
    _id_prefix = f"{os.getpid():x}-{int(time.time() * 1000):x}"
    _cancel_cond = threading.Condition()  # another thread may have held it at the fork


if sys.platform != "win32":  # no fork on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Session:
    """Thread-safe key/value store for resources shared by a worker's handlers (pools, clients)."""

    __slots__ = ("_lock", "_values")

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, Any] = dict(values or {})

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            return self._values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        with self._lock:
            self._values[key] = value

    def __repr__(self) -> str:
        return f"Session({sorted(self._values)})"


_DEFAULT_SESSION = Session()

# Per-execution objects stay out of the cyclic GC while they hold nothing that can close a cycle
# (rust/src/gc.rs): Status members and Sessions never count as such.
_core.gc_exempt([Status, Session])
_settle = _core.settle
_is_tracked = gc.is_tracked


class Context:
    """Per-execution state: key/values, the status, the error raised, deadline and cancellation.

    An execution's context leaves the cyclic GC when it ends holding nothing that can close a
    cycle (rust/src/gc.rs); setting a value that can keeps it tracked."""

    __slots__ = (
        "_values",
        "_status",
        "error",
        "deadline",
        "scheduled_at",
        "_cancelled",
        "_waiters",
        "_executing",
        "_started",
        "_trace",
        "_result",
        "session",
    )

    def __init__(
        self,
        session: Session | None = None,
        deadline: float | None = None,
        values: dict[str, Any] | None = None,
        scheduled_at: float | None = None,
    ) -> None:
        self._values = values
        # time.monotonic() at which the core made this execution due (an interval's ideal tick).
        self.scheduled_at = scheduled_at
        self._status = Status.UNKNOWN
        self.error: BaseException | None = None
        self.deadline = deadline
        self._cancelled = False
        self._waiters = 0
        self._executing = False  # set by the worker: this context belongs to an execution
        # time.perf_counter() when the context was made (for an execution: when it started);
        # step timings count from here.
        self._started = time.perf_counter()
        self._trace: Trace | None = None
        self._result: object = None  # a wh.Result a queued job's handler returned
        self.session = session if session is not None else _DEFAULT_SESSION

    @property
    def status(self) -> Status:
        """The execution's Status; assigning an int that is not a member stores its class, and
        anything that is not an int raises TypeError (the handler's error, not the worker's)."""
        return self._status

    @status.setter
    def status(self, value: int) -> None:
        self._status = value if type(value) is Status else as_status(value)

    def get(self, key: str, default: Any = None) -> Any:
        values = self._values
        return default if values is None else values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        if self._values is None:
            self._values = {}
        self._values[key] = value
        if _is_tracked(value):
            _settle(self)  # a value that can close a cycle: the collector must see this context

    def values(self) -> dict[str, Any]:
        """A copy of every key/value set on this context."""
        return dict(self._values or {})

    def set_status(self, status: int) -> None:
        self._status = Status(status)

    @property
    def cancelled(self) -> bool:
        """True once the worker stopped or the deadline passed: a handler should wrap up."""
        if self._cancelled:
            return True
        deadline = self.deadline
        return deadline is not None and time.monotonic() >= deadline

    def cancel(self) -> None:
        """Mark the execution cancelled and wake handlers blocked in wait_cancelled()."""
        self._cancelled = True
        if self._waiters:
            with _cancel_cond:
                _cancel_cond.notify_all()

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Block until cancelled or past the deadline, at most timeout s; True if cancelled."""
        timeout = _checks.timeout(timeout)
        end = None if timeout is None else time.monotonic() + timeout
        if self.deadline is not None and (end is None or self.deadline < end):
            end = self.deadline
        with _cancel_cond:
            self._waiters += 1
            try:
                while not self._cancelled:
                    remaining = None if end is None else end - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        break
                    _cancel_cond.wait(remaining)
            finally:
                self._waiters -= 1
        return self.cancelled

    def __repr__(self) -> str:
        return f"Context(status={self.status!r}, cancelled={self.cancelled})"


class Trace:
    """Step timings of one execution: mark(step) records the seconds since the previous mark."""

    __slots__ = ("_last", "steps")

    def __init__(self, start: float | None = None) -> None:
        self._last = time.perf_counter() if start is None else start
        self.steps: list[tuple[str, float]] = []

    def mark(self, step: str) -> float:
        now = time.perf_counter()
        elapsed = now - self._last
        self._last = now
        self.steps.append((step, elapsed))
        return elapsed


class Job:
    """A unit of work: a handler name, its arguments, and a fresh Context on every execution.

    A job whose args hold only atoms (str, int, float, ...) stays out of the cyclic GC
    (rust/src/gc.rs); it is looked at again when made, copied, and when each execution ends."""

    __slots__ = ("handler", "args", "queue", "timeout", "_id", "_ctx", "_seed")

    def __init__(
        self,
        handler: str,
        args: Mapping[str, Any] | None = None,
        *,
        queue: str = "default",
        timeout: float | None = None,
    ) -> None:
        if not isinstance(handler, str) or not handler:
            raise TypeError(f"handler must be a non-empty str, got {handler!r}")
        if args is not None and not isinstance(args, Mapping):
            raise TypeError(f"args must be a dict or None, got {type(args).__name__}")
        if not isinstance(queue, str) or not queue:
            raise TypeError(f"queue must be a non-empty str, got {queue!r}")
        self.handler = handler
        self.args: dict[str, Any] = dict(args) if args is not None else {}
        self.queue = queue
        self.timeout = _checks.job_timeout(timeout)
        self._id: str | None = None
        self._ctx: Context | None = None
        self._seed: dict[str, Any] | None = None  # ctx values set before the first execution
        _settle(self)

    @property
    def ctx(self) -> Context:
        """The current execution's Context (values set before performing are carried into it)."""
        ctx = self._ctx
        if ctx is None:
            ctx = self._ctx = Context()
        return ctx

    @ctx.setter
    def ctx(self, ctx: Context) -> None:
        self._ctx = ctx
        _settle(self)

    @property
    def id(self) -> str:
        """Process-unique id of this job object (copies get their own)."""
        if self._id is None:
            self._id = f"{_id_prefix}-{next(_ids):x}"
        return self._id

    @property
    def trace(self) -> Trace:
        """Step timings of the current execution (job.trace.mark("step")), counted from the
        start of the execution."""
        ctx = self.ctx
        trace = ctx._trace
        if trace is None:
            trace = ctx._trace = Trace(ctx._started)
            _settle(ctx)
        return trace

    def copy(self) -> Job:
        """A deep copy of the arguments with a fresh Context and a new id."""
        new = self._fork()
        new.args = _copy.deepcopy(self.args)
        _settle(new)
        return new

    def _fork(self) -> Job:
        # Per-execution copy for repeating schedules: shallow args, fresh ctx, no __init__ checks.
        new = Job.__new__(Job)
        new.handler = self.handler
        new.args = dict(self.args)
        new.queue = self.queue
        new.timeout = self.timeout
        new._id = None
        prev = self._ctx
        seed = self._seed if prev is None or prev._executing else prev._values
        new._ctx = None
        new._seed = dict(seed) if seed else None
        _settle(new)
        return new

    def _arg(self, key: str, kinds: type | tuple[type, ...], name: str) -> Any:
        value = self.args.get(key, _MISSING)
        if value is _MISSING:
            raise ArgError(f"argument {key!r} is missing (wanted {name})")
        if isinstance(value, bool) and name != "bool" or not isinstance(value, kinds):
            raise ArgError(f"argument {key!r} must be {name}, got {type(value).__name__}")
        return value

    def arg_str(self, key: str) -> str:
        return str(self._arg(key, str, "str"))

    def arg_int(self, key: str) -> int:
        return int(self._arg(key, int, "int"))

    def arg_float(self, key: str) -> float:
        return float(self._arg(key, (int, float), "float"))

    def arg_bool(self, key: str) -> bool:
        return bool(self._arg(key, bool, "bool"))

    def __repr__(self) -> str:
        return f"Job({self.handler!r}, {self.args!r}, queue={self.queue!r})"
