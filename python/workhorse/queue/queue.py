"""`Queue`: enqueue into a durable queue (memory:// or redis://) and reach its client.

Arguments are a dict of JSON values, encoded here (never pickled); the backend keeps the JSON.
Every call runs in the Rust core with the GIL released; the `a*` twins await without blocking
the event loop (the core calls back when the backend answered, no thread per call).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from workhorse import _checks, _core
from workhorse.queue.client import Client
from workhorse.queue.context import meta_for
from workhorse.queue.job import QueuedJob, queued_job

__all__ = ["Queue"]

# (id, name, args JSON, delay seconds, unique key or None, meta JSON or None, due time or None):
# what the core enqueues. The due time (enqueue_at) is compared with the backend's clock.
_NewJob = tuple[str, str, str, float, "str | None", "str | None", "float | None"]


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"job name must be a str, got {type(name).__name__}")
    if not name:
        raise ValueError("job name must not be empty")
    return name


_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def encode_args(args: object) -> str:
    """JSON of a job's arguments: a dict with str keys and JSON values (TypeError otherwise)."""
    if args is None:
        return "{}"
    if not isinstance(args, Mapping):
        raise TypeError(f"args must be a dict of JSON values, got {type(args).__name__}")
    for key in args:
        if type(key) is not str:
            raise TypeError(f"args keys must be str, got {type(key).__name__} {key!r}")
    try:
        return _encode(args if type(args) is dict else dict(args))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"args must be JSON values (never pickled): {exc}") from None


def _unique_key(name: str, payload: str) -> str:
    digest = hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()
    return f"{name}:{digest}"


def _canonical(args: str) -> str:
    # Equal args give one key whatever their key order.
    return json.dumps(json.loads(args), sort_keys=True, separators=(",", ":"))


def _check_job_id(job_id: object) -> str:
    """A caller's job id: enqueuing an id that is stored already makes no second job."""
    if job_id is None:
        return ""  # the core makes one
    if not isinstance(job_id, str):
        raise TypeError(f"job_id must be a str, got {type(job_id).__name__}")
    if not job_id or len(job_id) > 256 or "|" in job_id:
        # '|' separates the id from the name or token in the backend's sets.
        raise ValueError(f"job_id must be 1 to 256 characters without '|', got {job_id!r}")
    return job_id


class Queue:
    """A durable queue: `Queue.from_url("memory://")` or `Queue.from_url("redis://host/0")`."""

    def __init__(self, core: _core.QueueCore, url: str, namespace: str) -> None:
        self._core = core
        self.url = url
        self.namespace = namespace
        self.client = Client(core)
        # aenqueue calls waiting for their loop's next turn, by loop.
        self._batches: dict[asyncio.AbstractEventLoop, list[tuple[_NewJob, asyncio.Future[Any]]]]
        self._batches = {}

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str = "workhorse",
        lease: float = 30.0,
        reaper_interval: float = 5.0,
        command_timeout: float = 5.0,
    ) -> Queue:
        """Open a queue. `memory://` is a new store per call, `memory://NAME` one shared by name
        in this process; `redis://[:password@]host:port/db` (or rediss://) is shared by every
        process using the same namespace. `lease`: seconds a claimed job is held without a
        renewal before the reaper (every `reaper_interval` s, in every worker) requeues it.
        `command_timeout`: seconds a Redis command may wait for its answer; then it fails
        (QueueError) and its connection is replaced (a half-open one never answers)."""
        if not isinstance(url, str):
            raise TypeError(f"url must be a str, got {type(url).__name__}")
        if not isinstance(namespace, str) or not namespace:
            raise TypeError(f"namespace must be a non-empty str, got {namespace!r}")
        lease = _checks.period(lease, "lease")
        reaper_interval = _checks.period(reaper_interval, "reaper_interval")
        command_timeout = _checks.period(command_timeout, "command_timeout")
        core = _core.QueueCore(url, namespace, lease, reaper_interval, command_timeout)
        return cls(core, url, namespace)

    def __repr__(self) -> str:
        return f"Queue({self.url!r}, namespace={self.namespace!r})"

    # -- building the core's rows ---------------------------------------------------------

    @staticmethod
    def _row(
        name: object,
        args: object,
        delay: float = 0.0,
        unique: bool = False,
        key: Any = None,
        job_id: object = None,
        at: float | None = None,
    ) -> _NewJob:
        name = _check_name(name)
        payload = encode_args(args)
        unique_key = None
        if key is not None:
            unique_key = _unique_key(name, "key:" + encode_args({"key": key}))
        elif unique:
            unique_key = _unique_key(name, _canonical(payload))
        # An empty id: the core makes one, before its first attempt (a retry sends the same).
        return (_check_job_id(job_id), name, payload, delay, unique_key, meta_for(name), at)

    def _one(self, row: _NewJob, args: Mapping[str, Any] | None) -> QueuedJob | None:
        (stored,) = self._core.enqueue([row])
        if stored is None:
            return None
        # An id stored already answers that job, whose arguments may differ from these.
        return queued_job(stored, _copy(args) if stored[2] == row[2] else None)

    async def _aone(self, row: _NewJob) -> QueuedJob | None:
        # Calls made in the same turn of the event loop go to the backend together: one round
        # trip for all of them, one wake-up of the loop for all the answers.
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        batch = self._batches.get(loop)
        if batch is None:
            batch = self._batches[loop] = []
            loop.call_soon(self._flush, loop)
        batch.append((row, fut))
        stored = await fut
        return None if stored is None else queued_job(stored)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._batches.pop(loop, [])
        if not batch:
            return
        futures = [fut for _row, fut in batch]

        def done(result: list[Any] | None, error: BaseException | None) -> None:
            loop.call_soon_threadsafe(_settle_all, futures, result, error)

        try:
            self._core.enqueue_cb([row for row, _fut in batch], done)
        except BaseException as exc:  # noqa: BLE001 - every caller gets the error
            _settle_all(futures, None, exc)

    async def _arows(self, rows: list[_NewJob]) -> list[QueuedJob | None]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Any]] = loop.create_future()

        def done(result: list[Any] | None, error: BaseException | None) -> None:
            loop.call_soon_threadsafe(_settle, fut, result, error)

        self._core.enqueue_cb(rows, done)
        stored = await fut
        return [None if s is None else queued_job(s) for s in stored]

    # -- enqueue --------------------------------------------------------------------------

    def enqueue(
        self, name: str, args: Mapping[str, Any] | None = None, *, job_id: str | None = None
    ) -> QueuedJob:
        """Enqueue a job to run now.

        `job_id`: the job's id (else a new random one). An id that is stored already (the job
        waits, runs, is scheduled, in retry or dead) enqueues nothing and returns that job, so
        retrying an enqueue whose outcome is unknown with the same id makes one job. Once the
        job is done and deleted the id is free again."""
        job = self._one(self._row(name, args, job_id=job_id), args)
        assert job is not None
        return job

    def enqueue_in(
        self,
        name: str,
        delay: float | _dt.timedelta,
        args: Mapping[str, Any] | None = None,
        *,
        job_id: str | None = None,
    ) -> QueuedJob:
        """Enqueue a job to run after delay (seconds or timedelta, counted by the backend's
        clock from when it stores the job)."""
        job = self._one(self._row(name, args, _checks.delay(delay), job_id=job_id), args)
        assert job is not None
        return job

    def enqueue_at(
        self,
        name: str,
        when: float | _dt.datetime,
        args: Mapping[str, Any] | None = None,
        *,
        job_id: str | None = None,
    ) -> QueuedJob:
        """Enqueue a job to run at when (datetime, naive = local time, or epoch seconds), by the
        backend's clock (Redis's `TIME`), whatever this machine's clock says."""
        job = self._one(self._row(name, args, at=_checks.epoch(when), job_id=job_id), args)
        assert job is not None
        return job

    def enqueue_unique(
        self, name: str, args: Mapping[str, Any] | None = None, *, job_id: str | None = None
    ) -> QueuedJob | None:
        """Enqueue unless an equal job (same name and args) is waiting: then None."""
        return self._one(self._row(name, args, unique=True, job_id=job_id), args)

    def enqueue_unique_in(
        self,
        name: str,
        delay: float | _dt.timedelta,
        args: Mapping[str, Any] | None = None,
        *,
        job_id: str | None = None,
    ) -> QueuedJob | None:
        """enqueue_unique, to run after delay."""
        row = self._row(name, args, _checks.delay(delay), unique=True, job_id=job_id)
        return self._one(row, args)

    def enqueue_unique_at(
        self,
        name: str,
        when: float | _dt.datetime,
        args: Mapping[str, Any] | None = None,
        *,
        job_id: str | None = None,
    ) -> QueuedJob | None:
        """enqueue_unique, to run at when (by the backend's clock, as enqueue_at)."""
        row = self._row(name, args, unique=True, job_id=job_id, at=_checks.epoch(when))
        return self._one(row, args)

    def enqueue_unique_by_key(
        self, name: str, args: Mapping[str, Any] | None, key: Any, *, job_id: str | None = None
    ) -> QueuedJob | None:
        """Enqueue unless a job of this name enqueued with an equal key (any JSON value) is
        waiting: then None."""
        if key is None:
            raise TypeError("key must be a JSON value, not None")
        return self._one(self._row(name, args, key=key, job_id=job_id), args)

    def enqueue_many(
        self, jobs: Iterable[tuple[str, Mapping[str, Any] | None] | Sequence[Any]]
    ) -> list[QueuedJob]:
        """Enqueue (name, args) pairs: one round trip per 10,000."""
        pairs = [job if type(job) is tuple else tuple(job) for job in jobs]
        rows = [self._pair(job) for job in pairs]
        out: list[QueuedJob] = []
        for start in range(0, len(rows), 10_000):
            stored = self._core.enqueue(rows[start : start + 10_000])
            out.extend(
                queued_job(s, _copy(pair[1]))
                for s, pair in zip(stored, pairs[start : start + 10_000], strict=True)
                if s is not None  # never None: not unique
            )
        return out

    @classmethod
    def _pair(cls, job: object) -> _NewJob:
        if not isinstance(job, (tuple, list)) or len(job) != 2:
            raise TypeError(f"enqueue_many takes (name, args) pairs, got {job!r}")
        return cls._row(job[0], job[1])

    # -- awaitable twins ------------------------------------------------------------------

    async def aenqueue(
        self, name: str, args: Mapping[str, Any] | None = None, *, job_id: str | None = None
    ) -> QueuedJob:
        job = await self._aone(self._row(name, args, job_id=job_id))
        assert job is not None
        return job

    async def aenqueue_in(
        self,
        name: str,
        delay: float | _dt.timedelta,
        args: Mapping[str, Any] | None = None,
        *,
        job_id: str | None = None,
    ) -> QueuedJob:
        job = await self._aone(self._row(name, args, _checks.delay(delay), job_id=job_id))
        assert job is not None
        return job

    async def aenqueue_at(
        self,
        name: str,
        when: float | _dt.datetime,
        args: Mapping[str, Any] | None = None,
        *,
        job_id: str | None = None,
    ) -> QueuedJob:
        job = await self._aone(self._row(name, args, at=_checks.epoch(when), job_id=job_id))
        assert job is not None
        return job

    async def aenqueue_unique(
        self, name: str, args: Mapping[str, Any] | None = None, *, job_id: str | None = None
    ) -> QueuedJob | None:
        return await self._aone(self._row(name, args, unique=True, job_id=job_id))

    async def aenqueue_unique_in(
        self,
        name: str,
        delay: float | _dt.timedelta,
        args: Mapping[str, Any] | None = None,
        *,
        job_id: str | None = None,
    ) -> QueuedJob | None:
        row = self._row(name, args, _checks.delay(delay), unique=True, job_id=job_id)
        return await self._aone(row)

    async def aenqueue_unique_at(
        self,
        name: str,
        when: float | _dt.datetime,
        args: Mapping[str, Any] | None = None,
        *,
        job_id: str | None = None,
    ) -> QueuedJob | None:
        row = self._row(name, args, unique=True, job_id=job_id, at=_checks.epoch(when))
        return await self._aone(row)

    async def aenqueue_unique_by_key(
        self, name: str, args: Mapping[str, Any] | None, key: Any, *, job_id: str | None = None
    ) -> QueuedJob | None:
        if key is None:
            raise TypeError("key must be a JSON value, not None")
        return await self._aone(self._row(name, args, key=key, job_id=job_id))

    async def aenqueue_many(
        self, jobs: Iterable[tuple[str, Mapping[str, Any] | None] | Sequence[Any]]
    ) -> list[QueuedJob]:
        rows = [self._pair(job) for job in jobs]
        out: list[QueuedJob] = []
        for start in range(0, len(rows), 10_000):
            out.extend(j for j in await self._arows(rows[start : start + 10_000]) if j is not None)
        return out


def _copy(args: Mapping[str, Any] | None) -> dict[str, Any]:
    # The arguments as enqueued (top level copied), without decoding the JSON just made.
    return {} if args is None else dict(args)


def _settle_all(
    futures: list[asyncio.Future[Any]], result: list[Any] | None, error: BaseException | None
) -> None:
    for i, fut in enumerate(futures):
        if not fut.done():
            if error is not None or result is None:
                fut.set_exception(error or RuntimeError("the queue answered nothing"))
            else:
                fut.set_result(result[i])


def _settle(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)
