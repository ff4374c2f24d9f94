"""The executor lanes: how the executions the core took run, and the records it holds.

A Worker (worker.py) hands the core a *record* for every way of performing a job: the Execution
of a `perform`, an Executor call (_Call), or a schedule's _Repeat. The core owns it from then on,
decides when an execution is due and admits it under the concurrency limit. Then one of two lanes
runs it:
- the sync lane: executor threads run the core's loop (rust/src/dispatch/executor.rs), which
  calls `_run_ready` for each execution it takes, one at a time, so a handler that blocks holds
  up only itself; one sync execution's plumbing is in the core too (rust/src/dispatch/run.rs);
- the asyncio lane: one feeder thread per loop takes `async def` executions in batches, and each
  finishing execution pulls what its freed permit made ready (`_pull_async`).
Queued jobs (a worker consuming a Queue) run on the same lanes, and ack through the core.
Python runs the adapted handler (status rules inside every adapter) and gives the status back.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from workhorse import _core
from workhorse._future import LazyFuture
from workhorse.adapters.keys import REQUEST_ID as REQUEST_ID_KEY
from workhorse.errors import WorkerFailed, WorkerStopped
from workhorse.execution import Execution
from workhorse.job import Context, Job
from workhorse.middleware import Handler, record_error
from workhorse.queue.job import QueueJob
from workhorse.queue.outcome import HandlerOptions, outcome_of
from workhorse.status import Status

if TYPE_CHECKING:
    from workhorse._core import Dispatcher, ExecPath
    from workhorse.queue.queue import Queue

_UNKNOWN, _SUCCESS, _INTERNAL_ERROR = Status.UNKNOWN, Status.SUCCESS, Status.INTERNAL_ERROR
_UNAVAILABLE = Status.UNAVAILABLE
_ASYNC_BATCH = 4096
_TAKE_TIMEOUT = 0.5
_DEFAULT_OPTIONS = HandlerOptions()
# The contexts of running executions by the id of their Job: an execution claims its job (in the
# core, atomically under the GIL, no lock for threads to queue on); if another execution holds
# it, this one runs on a fork of it.
_running_jobs: dict[int, Context] = {}
_settle = _core.settle


# The record of an interval or receive schedule, or of a queue consumer (job and handler None):
# a Rust object (rust/src/execution.rs) whose job and handler the executor loop reads as fields.
_Repeat = _core.Repeat


class _Call(LazyFuture[Any]):
    """A record for Executor.submit: the Future handed to the caller, carrying its call."""

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        super().__init__()
        self.call: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]] | None = (
            fn,
            args,
            kwargs,
        )


class Lanes:
    """The executor lanes of a Worker (a base class of it: these run on its state)."""

    # The Worker's state the lanes use (set in Worker.__init__).
    name: str
    logger: logging.Logger
    concurrency: int
    _core: Dispatcher
    _path: ExecPath
    _live: set[Context]
    _lock: threading.Lock
    _threads: list[threading.Thread]
    _tasks: set[asyncio.Task[None]]
    _pull_pending: bool
    _thread_init: Callable[[], bool] | None
    _queue: Queue | None
    _queue_options: dict[str, HandlerOptions]
    _queue_live: set[Context]
    _queue_tasks: set[asyncio.Task[None]]
    _queue_running: dict[str, QueueJob]
    _queue_task_of: dict[str, asyncio.Task[None]]
    _grace_over: bool
    _failed: WorkerFailed | None

    if TYPE_CHECKING:

        def _chain(self, name: str) -> tuple[Handler, bool]: ...
        def _ensure_loop(self) -> asyncio.AbstractEventLoop: ...
        def _spawn_sync_thread(self) -> None: ...

    def _begin(self, job: Job, due: float | None, execution: Execution | None = None) -> Job:
        """Give an execution its own Context: on the job performed, or on a fork of it when
        another execution of the same Job object is running (a template performed many times).
        The core does it (rust/src/dispatch/run.rs), for the sync executions it runs too."""
        return self._path.begin(job, due, execution)  # type: ignore[no-any-return]

    def _run_job(
        self,
        job: Job,
        handler: Handler,
        due: float | None = None,
        execution: Execution | None = None,
        live: set[Context] | None = None,
    ) -> Context:
        """Run one sync execution (begin, the chain, the final status) in the core."""
        return self._path.run(job, handler, due, execution, live)  # type: ignore[no-any-return]

    def _on_error(self, job: Job, exc: BaseException) -> None:
        # The core's run path: what the adapted chain raised (SystemExit in a handler must not
        # kill a thread).
        record_error(job, exc, self.logger)

    def _internal_error(self, exc: BaseException) -> None:
        # The core's run path: a fault of workhorse around an execution, never of its handler.
        self.logger.error("%s: internal error finishing an execution", self.name, exc_info=exc)

    def _on_result(self, job: Job, result: object) -> None:
        # The core's run path: a chain that returned something. A plain adapter around an async
        # handler handed us a coroutine: run it on the loop (its error is the execution's).
        if inspect.isawaitable(result):
            asyncio.run_coroutine_threadsafe(_as_coro(result), self._ensure_loop()).result()

    async def _run_async(
        self,
        job: Job,
        handler: Handler,
        due: float | None = None,
        execution: Execution | None = None,
        live: set[Context] | None = None,
        key: int = -1,
    ) -> Context:
        """Run an async execution. key >= 0: one the asyncio lane took (0 for a one-shot), run
        as its own task's coroutine: it also leaves the lane's task set, completes with the core
        and resolves its handle (one coroutine per execution, not a wrapper around this one)."""
        ctx: Context | None = None
        try:
            # While it runs, no other execution replaces the job's context: they fork instead.
            job = self._begin(job, due, execution)
            ctx = job._ctx
            assert ctx is not None
            if live is None:
                live = self._live
            live.add(ctx)
            try:
                await handler(job)  # type: ignore[misc]
            except asyncio.CancelledError as exc:
                # Cancelled by stop(): the context says so; the execution ends as unavailable.
                ctx.cancel()
                if ctx.status < 400:
                    ctx.status = Status.UNAVAILABLE
                ctx.error = exc
            except BaseException as exc:  # noqa: BLE001 - an adapter error never kills the loop
                record_error(job, exc, self.logger)
            finally:
                live.discard(ctx)
                del _running_jobs[id(job)]
                _settle(ctx, job)  # what the handler and adapters left on them decides
            _final_status(ctx)
            return ctx
        finally:
            if key >= 0:
                self._tasks.discard(asyncio.current_task())
                status = _INTERNAL_ERROR if ctx is None else ctx._status
                self._core.done(key, status)
                if execution is not None:
                    execution._finish(status, None if ctx is None else ctx.error)
                if not self._pull_pending:
                    self._pull_pending = True
                    asyncio.get_running_loop().call_soon(self._pull_async)

    def _sync_loop(self) -> None:
        # The core's executor loop (rust/src/dispatch/executor.rs) runs on this thread until the
        # worker stops, calling _run_ready for each execution it takes, one at a time: a handler
        # that blocks holds up only itself. A failed thread initializer (Executor) breaks the
        # pool: this thread then fails what it takes instead of running it, so none waits forever.
        broken = self._thread_init is not None and not self._thread_init()
        run = self._fail_ready if broken else self._run_ready
        self._core.run_sync(run, self._grow, _checkpoint, self._path)

    def _grow(self) -> None:
        # Called by the executor loop when it took work and no thread is left waiting: one more
        # while below the limit, so that a handler that blocks never holds up the next execution.
        if len(self._threads) < self.concurrency:
            with self._lock:
                self._spawn_sync_thread()

    def _fail_ready(self, key: int, rec: Any, item: Any, due: float, ended: bool) -> int | None:
        from concurrent.futures.thread import BrokenThreadPool

        error = BrokenThreadPool("A thread initializer failed, the pool is broken")
        if type(rec) is _Call:
            self._core.done(key, _UNAVAILABLE)
            if rec.set_running_or_notify_cancel():
                rec.set_exception(error)
            return None
        self._drop(key, rec, ended, error)
        return None

    def _run_ready(self, key: int, rec: Any, item: Any, due: float, ended: bool) -> int | None:
        """Run one execution the core's executor loop took: `rec` is the record it was
        registered with. Returns the status the core completes it with, or None when it is
        complete already (a one-shot frees its permit before resolving its handle; a queued job
        acks) or was an end marker (its schedule ends)."""
        kind = type(rec)
        if kind is _Repeat:
            if ended:
                rec.schedule._end()
                return None
            if rec.job is None:
                self._run_queued(key, item, due)
                return None
            status = _INTERNAL_ERROR
            try:
                job = self._fork(rec, item) if rec.receives else rec.job
                status = self._run_job(job, rec.handler, due)._status
            except BaseException:  # noqa: BLE001 - one execution never ends an executor thread
                self.logger.exception("%s: internal error running an execution", self.name)
            return status
        try:
            if kind is _Call:
                self._run_call(key, rec)
            else:
                self._run_execution(rec, due)
        except BaseException:  # noqa: BLE001 - one execution never ends an executor thread
            self.logger.exception("%s: internal error finishing an execution", self.name)
        return None

    def _run_execution(self, execution: Execution, due: float) -> None:
        status = _INTERNAL_ERROR
        error: BaseException | None = None
        try:
            job = execution.job
            ctx = self._run_job(job, self._chain(job.handler)[0], due, execution)
            status, error = ctx._status, ctx.error
        finally:
            self._core.done(0, status)
            execution._finish(status, error)

    # -- queued jobs ----------------------------------------------------------------------------

    def _queued(self, key: int, claim: Any) -> tuple[QueueJob, Handler, HandlerOptions] | None:
        """A claimed job ready to run, and counted as running (until `_finish_queued`); None
        when it cannot be made ready (its payload cannot be decoded): it is dead already, with
        the reason."""
        assert self._queue is not None
        try:
            job = QueueJob._from_claim(claim, self._queue._core)
            meta = job.meta
            if meta and REQUEST_ID_KEY in meta:
                job._seed = {REQUEST_ID_KEY: meta[REQUEST_ID_KEY]}  # restored by request_id()
            options = self._queue_options.get(job.handler, _DEFAULT_OPTIONS)
            job.timeout = options.timeout
            handler = self._chain(job.handler)[0]
        except Exception as exc:  # noqa: BLE001 - reported as the job's death, not lost
            self._undecodable(key, claim, exc)
            return None
        self._queue_running[job.id] = job
        return job, handler, options

    def _finish_queued(
        self,
        key: int,
        job: QueueJob,
        ctx: Context | None,
        options: HandlerOptions,
    ) -> None:
        # Whatever happened, the claim is acked: a run that broke inside workhorse is released
        # to the queue rather than lost.
        self._queue_running.pop(job.id, None)
        outcome: tuple[str, float, str | None, str | None] = ("release", 0.0, None, None)
        status = Status.INTERNAL_ERROR
        try:
            if ctx is not None:
                status = ctx.status
                # Cancelled past the grace at stop, because its lease was lost or because the
                # queue consumer died: the work was cut short, so the job goes back (an ack the
                # backend refuses if another worker took it meanwhile).
                released = job._lease_lost or (
                    (self._grace_over or self._failed is not None) and ctx._cancelled
                )
                outcome = outcome_of(job, ctx, options, released)
        finally:
            self._core.done_claim(key, status, job.id, job.handler, job._token, *outcome)

    def _undecodable(self, key: int, claim: Any, exc: Exception) -> None:
        # A payload that is not a JSON object (written by hand into Redis, or corrupted) cannot
        # run and never will: dead at once, with the reason.
        (jid, name, *_rest), token = claim
        reason = f"undecodable job payload: {type(exc).__name__}: {exc}"
        self.logger.error("%s: job %s (%s) is dead: %s", self.name, jid, name, reason)
        self._core.done_claim(key, Status.BAD_REQUEST, jid, name, token, "dead", 0.0, reason)

    def _run_queued(self, key: int, claim: Any, due: float) -> None:
        queued = self._queued(key, claim)
        if queued is None:
            return
        job, handler, options = queued
        ctx: Context | None = None
        try:
            ctx = self._run_job(job, handler, due, live=self._queue_live)
        finally:
            self._finish_queued(key, job, ctx, options)

    async def _run_async_queued(self, key: int, claim: Any, due: float) -> None:
        queued = self._queued(key, claim)
        if queued is None:
            return
        job, handler, options = queued
        task = asyncio.current_task()
        if task is not None:
            self._queue_task_of[job.id] = task
        ctx: Context | None = None
        try:
            ctx = await self._run_async(job, handler, due, live=self._queue_live)
        finally:
            self._queue_task_of.pop(job.id, None)
            self._finish_queued(key, job, ctx, options)

    @staticmethod
    def _fork(rep: _Repeat, item: Any) -> Job:
        job = rep.job._fork()  # type: ignore[union-attr]
        job.args["received_data"] = item
        return job

    def _run_call(self, key: int, fut: _Call) -> None:
        status = Status.SUCCESS
        try:
            if fut.set_running_or_notify_cancel():
                fn, args, kwargs = fut.call  # type: ignore[misc]
                fut.call = None  # the Future may outlive the call: do not keep its arguments
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:  # noqa: BLE001 - goes to the Future, as in the stdlib
                    status = Status.INTERNAL_ERROR
                    fut.set_exception(exc)
                else:
                    fut.set_result(result)
        finally:
            self._core.done(key, status)

    def _feed_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        # One wake-up of the loop per batch of ready async executions.
        take = self._core.take
        while True:
            batch = take(True, _ASYNC_BATCH, _TAKE_TIMEOUT)
            if batch is None:
                return
            if not batch:
                continue
            try:
                loop.call_soon_threadsafe(self._start_async_batch, batch)
            except RuntimeError:  # the loop is closed: these executions cannot run
                self.logger.error(
                    "%s: event loop closed with %d executions ready", self.name, len(batch)
                )
                for key, rec, _item, _due, ended in batch:
                    self._drop(key, rec, ended, WorkerStopped("the worker's event loop is closed"))

    def _pull_async(self) -> None:
        # On the loop, after executions completed: start what their freed permits made ready
        # without the feeder thread's round trip (a wake-up of it, the GIL, a wake-up of the
        # loop) for every few executions; the feeder still serves a loop that is idle.
        self._pull_pending = False
        batch = self._core.take(True, _ASYNC_BATCH, 0.0)
        if batch:
            self._start_async_batch(batch)

    def _drop(self, key: int, rec: Any, ended: bool, error: BaseException) -> None:
        """An execution taken that cannot run: it completes as unavailable."""
        if ended:
            if rec is not None:
                rec.schedule._end()
            return
        self._core.done(key, _UNAVAILABLE)
        if type(rec) is Execution:
            rec._finish(_UNAVAILABLE, error)

    def _start_async_batch(self, batch: list[tuple[int, Any, Any, float, bool]]) -> None:
        loop = asyncio.get_running_loop()
        tasks = self._tasks
        for key, rec, item, due, ended in batch:
            if type(rec) is Execution:
                job = rec.job
                coro = self._run_async(job, self._chain(job.handler)[0], due, rec, None, 0)
            elif rec is None:  # its schedule went between due and taken
                if not ended:
                    self._core.done(key, _UNAVAILABLE)
                continue
            elif ended:
                rec.schedule._end()
                continue
            elif rec.job is None:
                task = _start_task(loop, self._run_async_queued(key, item, due))
                self._queue_tasks.add(task)
                task.add_done_callback(self._queue_tasks.discard)
                continue
            else:
                job = self._fork(rec, item) if rec.receives else rec.job
                coro = self._run_async(job, rec.handler, due, None, None, key)
            # Each execution's coroutine takes itself out of `tasks` when it ends (cheaper than
            # a done callback, which the loop would schedule as one more step).
            task = _start_task(loop, coro)
            if not task.done():
                tasks.add(task)


def _final_status(ctx: Context) -> Status:
    """The status an execution ends with, once its adapters are done with it."""
    status = ctx._status
    if status is _UNKNOWN:
        status = ctx._status = _SUCCESS if ctx.error is None else _INTERNAL_ERROR
    return status


def _checkpoint() -> None:
    """Called by the executor loop before it takes the next execution: entering Python code is
    where CPython hands the GIL to a thread that asked for it (see executor.rs)."""


async def _as_coro(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


if sys.version_info >= (3, 12):

    def _start_task(loop: asyncio.AbstractEventLoop, coro: Any) -> asyncio.Task[None]:
        # Run the coroutine at once, in its own Task: one that does not suspend ends here,
        # without a step scheduled on the loop.
        return asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg]

else:

    def _start_task(loop: asyncio.AbstractEventLoop, coro: Any) -> asyncio.Task[None]:
        return loop.create_task(coro)
