"""request_id: every execution carries an id for correlating its logs and traces."""

from __future__ import annotations

import itertools
import os

from workhorse.adapters._wrap import around
from workhorse.adapters.keys import REQUEST_ID
from workhorse.job import Job
from workhorse.middleware import Adapter, Handler

__all__ = ["new_request_id", "request_id"]

# 64 random bits per process and a counter: unique across processes like a uuid4, but a counter
# step instead of 16 bytes from the OS per execution. Re-drawn in a forked child.
_prefix = os.urandom(8).hex()
_counter = itertools.count(1)


def _reseed() -> None:
    global _prefix, _counter
    _prefix = os.urandom(8).hex()
    _counter = itertools.count(1)


os.register_at_fork(after_in_child=_reseed)


def new_request_id() -> str:
    """A new 32-hex-digit request id, unique across processes."""
    return f"{_prefix}{next(_counter):016x}"


def request_id(header: str = "request_id") -> Adapter:
    """Adapter setting ctx["request_id"]: kept if already set, else job.args[header], else new."""
    if not isinstance(header, str) or not header:
        raise TypeError(f"header must be a non-empty str, got {header!r}")

    def before(job: Job) -> None:
        ctx = job.ctx
        if ctx.get(REQUEST_ID):
            return
        given = job.args.get(header)
        ctx.set(REQUEST_ID, str(given) if given else new_request_id())

    def adapter(handler: Handler) -> Handler:
        return around(handler, before, _nothing)

    return adapter


def _nothing(job: Job, state: None, raised: BaseException | None) -> None:
    return None
