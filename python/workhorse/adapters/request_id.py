"""request_id: every execution carries an id for correlating its logs and traces."""

from __future__ import annotations

import contextvars
import os
import sys
from collections.abc import Awaitable, Callable
from typing import cast

from workhorse import _core
from workhorse.adapters.keys import REQUEST_ID
from workhorse.job import Job
from workhorse.middleware import Adapter, Handler, is_async_handler
from workhorse.queue.context import add_provider

__all__ = ["new_request_id", "request_id"]


# 64 random bits per process and a counter (kept in the core, rust/src/adapters.rs): unique across
# processes like a uuid4, but a counter step instead of 16 bytes from the OS per execution.
# Re-drawn in a forked child.
def _reseed() -> None:
    _core.seed_request_ids(os.urandom(8).hex())


_reseed()


if sys.platform != "win32":  # no fork on Windows
    os.register_at_fork(after_in_child=_reseed)


# The request id of the execution running in this thread or task: a job it enqueues carries it.
_current: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "workhorse_request_id", default=None
)


def _carried(name: str) -> dict[str, str] | None:
    rid = _current.get()
    return None if rid is None else {REQUEST_ID: rid}


add_provider(REQUEST_ID, _carried)


def new_request_id() -> str:
    """A new 32-hex-digit request id, unique across processes."""
    return _core.new_request_id()


def request_id(header: str = "request_id") -> Adapter:
    """Adapter setting ctx["request_id"]: kept if already set, else job.args[header], else new."""
    if not isinstance(header, str) or not header:
        raise TypeError(f"header must be a non-empty str, got {header!r}")

    def adapter(handler: Handler) -> Handler:
        if not is_async_handler(handler):
            # The core's wrapper applies _ensure's rules natively (rust/src/adapters.rs).
            return cast(
                Handler, _core.WithRequestId(handler, header, REQUEST_ID, _current, _ensure)
            )
        async_handler = cast(Callable[[Job], Awaitable[object]], handler)

        async def with_id_async(job: Job) -> object:
            token = _current.set(_ensure(job, header))
            try:
                return await async_handler(job)
            finally:
                _current.reset(token)

        return with_id_async

    return adapter


def _ensure(job: Job, header: str) -> str:
    # Runs on every execution: the context's values are read and written directly (a str never
    # needs the collector, so Context.set's check is not needed).
    ctx = job.ctx
    values = ctx._values
    rid: str | None = values.get(REQUEST_ID) if values else None
    if rid:
        return rid
    given = job.args.get(header)
    rid = str(given) if given else _core.new_request_id()
    if values is None:
        ctx._values = {REQUEST_ID: rid}
    else:
        values[REQUEST_ID] = rid
    return rid
