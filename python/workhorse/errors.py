"""The exceptions workhorse raises; each is named for what went wrong."""

from __future__ import annotations

from workhorse._core import ChannelClosed, CoreError, QueueError

__all__ = [
    "ArgError",
    "ChannelClosed",
    "CoreError",
    "InvalidHandler",
    "QueueError",
    "UnknownHandler",
    "WorkerFailed",
    "WorkerStopped",
]


class ArgError(ValueError):
    """A job argument is missing or has the wrong type; the execution ends with BAD_REQUEST."""


class InvalidHandler(TypeError, ValueError):
    """A handler that is not callable: a TypeError, and the ValueError DESIGN.md promises."""


class UnknownHandler(KeyError):
    """A job names a handler that was never registered on the worker."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown handler"


class WorkerStopped(RuntimeError):
    """The worker was stopped (or never started) before the execution could begin."""


class WorkerFailed(RuntimeError):
    """The worker's queue consumer died (a panic in the core): it claims no more jobs.

    Raised by `Worker.wait()` and `Worker.drain()`, kept as `Worker.failed`. The process should
    exit and be restarted; `workhorse worker` does so with exit code 70."""
