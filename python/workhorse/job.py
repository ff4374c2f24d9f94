"""Job, its per-execution Context, the worker's Session and step timings."""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from workhorse import _core
from workhorse.status import Status

__all__ = ["Context", "Job", "Session", "Trace"]


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


# A unit of work: a handler name, its arguments, and a fresh Context on every execution. A Rust
# object (rust/src/job.rs) so that the core's run path reads and forks it without running Python;
# its API is documented in _core.pyi. QueueJob (queue/job.py) subclasses it.
Job = _core.Job


def _new_id() -> str:
    """Process-unique id of a job object (Job.id): a counter, not uuid4 on every execution."""
    return f"{_id_prefix}-{next(_ids):x}"
