"""Queued jobs: `QueuedJob` (what enqueue and the client return) and the Job a handler gets."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, NamedTuple

from workhorse.job import Job

if TYPE_CHECKING:
    from workhorse import _core

__all__ = ["QueueJob", "QueuedJob", "queued_job"]

# (id, name, args JSON, enqueued_at, run_at, fails, last_error, died_at, reason, meta JSON)
JobTuple = tuple[
    str, str, str, float, float, int, "str | None", "float | None", "str | None", "str | None"
]


class QueuedJob(NamedTuple):
    """A job in a durable queue. Times are epoch seconds from the backend's clock."""

    id: str
    name: str
    args: dict[str, Any]
    enqueued_at: float
    run_at: float
    fails: int = 0
    last_error: str | None = None
    died_at: float | None = None
    reason: str | None = None
    # What travelled with the job from the enqueuing code (request_id, traceparent), if anything.
    meta: dict[str, str] | None = None


UNDECODABLE = "<undecodable>"


def _args_of(raw: str) -> dict[str, Any]:
    # The client shows what a corrupted payload holds instead of failing the whole page.
    try:
        args = json.loads(raw)
    except ValueError:
        return {UNDECODABLE: raw}
    return args if isinstance(args, dict) else {UNDECODABLE: raw}


def _meta_of(raw: str | None) -> dict[str, str] | None:
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
    except ValueError:
        return None
    return meta if isinstance(meta, dict) else None


def queued_job(t: JobTuple, args: dict[str, Any] | None = None) -> QueuedJob:
    """A QueuedJob from the core's tuple; `args`: the caller's arguments, when it has them (an
    enqueue), so they are not decoded again."""
    return QueuedJob(
        t[0],
        t[1],
        _args_of(t[2]) if args is None else args,
        t[3],
        t[4],
        t[5],
        t[6],
        t[7],
        t[8],
        None if t[9] is None else _meta_of(t[9]),
    )


class QueueJob(Job):
    """The Job a queued job's handler gets: `id` is the queue's, plus `name`, `fails` (failed
    runs before this one), `enqueued_at`, `last_error` and `checkin(message)`."""

    __slots__ = (
        "fails",
        "enqueued_at",
        "run_at",
        "last_error",
        "meta",
        "_token",
        "_store",
        "_lease_lost",
    )

    fails: int
    enqueued_at: float
    run_at: float
    last_error: str | None
    meta: dict[str, str] | None
    _token: int
    _store: _core.QueueCore
    _lease_lost: bool  # set by the worker when it could not renew this run's lease

    @property
    def name(self) -> str:
        return self.handler

    def checkin(self, message: str) -> bool:
        """Record progress ("i=335000"), shown by the client and dashboard; False if this run
        no longer holds the job (its lease was lost)."""
        return bool(self._store.checkin(self.id, self._token, str(message)))

    @classmethod
    def _from_claim(cls, claim: tuple[JobTuple, int], store: _core.QueueCore) -> QueueJob:
        (jid, name, args, enqueued_at, run_at, fails, last_error, _died, _reason, meta) = claim[0]
        token = claim[1]
        job = cls(name, queue=name)
        decoded = json.loads(args)
        if not isinstance(decoded, dict):
            raise TypeError(f"arguments must be a JSON object, got {type(decoded).__name__}")
        job.args = decoded
        job._id = jid
        job.fails = fails
        job.enqueued_at = enqueued_at
        job.run_at = run_at
        job.last_error = last_error
        job.meta = _meta_of(meta)
        job._token = token
        job._store = store
        job._lease_lost = False
        return job

    def __repr__(self) -> str:
        return f"QueueJob({self.handler!r}, id={self.id!r}, fails={self.fails})"
