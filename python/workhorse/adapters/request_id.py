"""request_id: every execution carries an id for correlating its logs and traces."""

from __future__ import annotations

import uuid

from workhorse.adapters._wrap import around
from workhorse.adapters.keys import REQUEST_ID
from workhorse.job import Job
from workhorse.middleware import Adapter, Handler

__all__ = ["request_id"]


def request_id(header: str = "request_id") -> Adapter:
    """Adapter setting ctx["request_id"]: kept if already set, else job.args[header], else new."""
    if not isinstance(header, str) or not header:
        raise TypeError(f"header must be a non-empty str, got {header!r}")

    def before(job: Job) -> None:
        ctx = job.ctx
        if ctx.get(REQUEST_ID):
            return
        given = job.args.get(header)
        ctx.set(REQUEST_ID, str(given) if given else uuid.uuid4().hex)

    def adapter(handler: Handler) -> Handler:
        return around(handler, before, _nothing)

    return adapter


def _nothing(job: Job, state: None, raised: BaseException | None) -> None:
    return None
