"""Job, its per-execution Context, the worker's Session and step timings."""

from __future__ import annotations

import copy as _copy
import itertools
import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, TypeVar

from workhorse import _checks, _core
from workhorse.errors import ArgError
from workhorse.status import Status

__all__ = ["Context", "Job", "Session", "Trace"]

_T = TypeVar("_T")
_MISSING: Any = object()

# Job ids are unique per process without paying for uuid4 on every execution; a forked child
# draws a new prefix (its pid), so parent and child never make the same id.
_ids = itertools.count(1)
_id_prefix = f"{os.getpid():x}-{int(time.time() * 1000):x}"

def _after_fork_in_child() -> None:
    global _id_prefix
    _id_prefix = f"{os.getpid():x}-{int(time.time() * 1000):x}"


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


# Per-execution state: key/values, the status, the error raised, deadline and cancellation. A
# Rust object (rust/src/context.rs) so that the core's run path makes and reads one per execution
# without running Python; its API is documented in _core.pyi.
Context = _core.Context


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
