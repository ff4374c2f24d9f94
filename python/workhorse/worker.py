"""Worker: go-work's CommonWorker on the Rust dispatcher.

Every way of performing a job (now, at a time, after a delay, every interval, per received item)
hands the core a *record* (the Execution, the Executor call, or a schedule's _Repeat), which owns
it from then on. The core decides when executions are due and admits them under the concurrency
limit; the executor lanes (lanes.py, the Worker's base class) run what it admits. This module is
the Worker's API: registering handlers and adapters, performing, starting and stopping.
"""

from __future__ import annotations

import asyncio
import atexit
import datetime as _dt
import itertools
import logging
import os
import socket
import sys
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Future
from typing import Any, TypeVar

from workhorse import _checks, _core
from workhorse.errors import InvalidHandler, UnknownHandler, WorkerFailed, WorkerStopped
from workhorse.execution import Execution, Schedule, finish_unstarted
from workhorse.job import Context, Job, Session
from workhorse.lanes import (
    _DEFAULT_OPTIONS,
    _INTERNAL_ERROR,
    _SUCCESS,
    _TAKE_TIMEOUT,
    _UNKNOWN,
    Lanes,
    _Call,
    _Repeat,
    _running_jobs,
)
from workhorse.middleware import (
    Adapter,
    Handler,
    adapt,
    apply_status_rules,
    is_async_handler,
    unadapt,
)
from workhorse.queue.job import QueueJob
from workhorse.queue.outcome import HandlerOptions
from workhorse.queue.queue import Queue, encode_args
from workhorse.sources import HOLDING, Channel, pump_async, pump_thread, source_kind
from workhorse.status import Status

__all__ = ["Worker", "live_workers"]

_H = TypeVar("_H", bound=Handler)

_keys = itertools.count(1)
_names = itertools.count(1)
_workers: weakref.WeakSet[Worker] = weakref.WeakSet()
# figures() key prefix of the cumulative interval-lateness buckets ("...:<upper bound seconds>").
LATENESS_LE = "interval_lateness_le:"


def live_workers() -> list[Worker]:
    """Workers of this process that are started (read by the Prometheus core collector)."""
    return [w for w in list(_workers) if w._started and not w._stopped]


def _after_fork_in_child() -> None:
    # A forked child has none of the parent's threads: a worker started in the parent cannot run
    # anything here. It is marked stopped, with a core that refuses every call, so that each use
    # raises WorkerStopped naming the fork instead of returning handles that never resolve.
    _running_jobs.clear()  # the parent's executions do not run here
    for worker in list(_workers):
        if worker._started and not worker._stopped:
            worker._forked_from = worker._pid
            worker._stopped = True
            worker._lock = threading.Lock()
            worker._threads = []
            worker._live.clear()
            dead = _core.Dispatcher(worker.concurrency)
            dead.close()
            worker._core = dead
            _workers.discard(worker)


if sys.platform != "win32":  # no fork on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _shutdown_core() -> None:
    for worker in list(_workers):
        if worker._started and not worker._stopped:
            worker.stop(timeout=1.0)
    _core.shutdown()


class Worker(Lanes):
    """Runs registered handlers for jobs: now, at a time, after a delay, on an interval, per item.

    Plain handlers run on up to `concurrency` executor threads; `async def` handlers run on the
    asyncio loop the worker was started in (`async with worker`), else on a loop thread it owns.
    `concurrency` bounds executions of both kinds together.
    """

    def __init__(
        self,
        *,
        concurrency: int = 10,
        adapters: Iterable[Adapter] = (),
        session: Session | None = None,
        logger: logging.Logger | None = None,
        name: str | None = None,
        queue: Queue | None = None,
        grace: float = 25.0,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int):
            raise TypeError(f"concurrency must be an int, got {type(concurrency).__name__}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if session is not None and not isinstance(session, Session):
            raise TypeError(f"session must be a wh.Session, got {type(session).__name__}")
        if queue is not None and not isinstance(queue, Queue):
            raise TypeError(f"queue must be a wh.Queue, got {type(queue).__name__}")
        self._queue = queue
        self._grace = _checks.delay(grace, "grace")
        self.concurrency = concurrency
        self.session = session if session is not None else Session()
        self.logger = logger or logging.getLogger("workhorse")
        self.name = name or f"worker-{next(_names)}"
        self._adapters: list[Adapter] = []
        self._handlers: dict[str, Handler] = {}
        self._chains: dict[str, tuple[Handler, bool]] = {}
        self.use(*adapters)
        self._core = _core.Dispatcher(concurrency)
        # The core owns every execution's record (an Execution, an Executor call, a _Repeat) and
        # hands it back when the execution is taken; the keys of the queue consumers' schedules.
        self._queue_keys: list[int] = []
        self._live: set[Context] = set()
        # One sync execution's plumbing, done in the core (rust/src/dispatch/run.rs).
        self._path = _core.ExecPath(
            _running_jobs,
            self._live,
            self.session,
            (_UNKNOWN, _SUCCESS, _INTERNAL_ERROR),
            self._on_error,
            self._on_result,
            (self._chains, self._chain),
            self._internal_error,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._pull_pending = False  # a _pull_async is scheduled on the loop
        self._pumps: set[asyncio.Task[Any]] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._feeder: threading.Thread | None = None
        self._started = False
        self._stopped = False
        self._pid = os.getpid()
        self._forked_from: int | None = None  # the parent's pid, in a child forked after start
        # Threads running a sync perform of this worker (stop() there would wait for itself).
        self._inline: set[int] = set()
        # Durable queue: handler options by name, contexts and tasks of queued runs (cancelled
        # only once the grace has passed), periodic enqueues (spec, name, args JSON).
        self._queue_options: dict[str, HandlerOptions] = {}
        self._queue_live: set[Context] = set()
        self._queue_tasks: set[asyncio.Task[None]] = set()
        # Queued runs going now by job id (and their task, for async handlers): a run whose
        # lease was lost is cancelled through them.
        self._queue_running: dict[str, QueueJob] = {}
        self._queue_task_of: dict[str, asyncio.Task[None]] = {}
        self._grace_over = False
        # Set when the queue consumer died (a panic in the core); `_changed` is set by that and
        # by stop, for wait().
        self._failed: WorkerFailed | None = None
        self._changed = threading.Event()
        self._periodic: list[tuple[str, str, str]] = []
        # The job names claimed from the queue (None: every name with a handler).
        self._claim_only: set[str] | None = None
        self._cron_tasks: list[_core.CronTask] = []
        self.worker_id = (
            f"{socket.gethostname()}:{os.getpid()}:{self.name}:{_core.new_job_id()[:8]}"
        )
        # Run by each executor thread before its first execution; False stops the thread.
        self._thread_init: Callable[[], bool] | None = None
        _workers.add(self)

    # -- registration -------------------------------------------------------------------------

    def register(self, name: str, handler: Handler) -> None:
        """Register handler under name; ValueError on a duplicate, InvalidHandler (a TypeError
        and a ValueError) if it is not callable."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"handler name must be a non-empty str, got {name!r}")
        if not callable(handler):
            raise InvalidHandler(
                f"handler for {name!r} must be callable, got {type(handler).__name__}"
            )
        if name in self._handlers:
            raise ValueError(f"a handler named {name!r} is already registered")
        self._handlers[name] = handler

    def handler(
        self,
        name: str,
        *,
        priority: int = 1,
        max_fails: int = 4,
        skip_dead: bool = False,
        max_concurrency: int = 0,
        backoff: Callable[[QueueJob], float] | None = None,
        timeout: float | None = None,
    ) -> Callable[[_H], _H]:
        """Decorator form of register(). The options apply to jobs of this name claimed from
        the worker's queue: `priority` (1..100000, weighted sampling between names),
        `max_fails` (failed runs until dead), `skip_dead` (delete instead), `max_concurrency`
        (runs at once across processes, 0 = no cap), `backoff` ((job) -> seconds before a
        retry; gocraft's curve by default), `timeout` (seconds per run)."""
        options = _handler_options(
            priority, max_fails, skip_dead, max_concurrency, backoff, timeout
        )

        def decorate(fn: _H) -> _H:
            self.register(name, fn)
            self._queue_options[name] = options
            return fn

        return decorate

    def periodically_enqueue(
        self, spec: str, name: str, args: dict[str, Any] | None = None
    ) -> None:
        """Enqueue `name` into the worker's queue once per slot of the cron `spec` (six fields,
        seconds first, or five; UTC) while the worker runs; any number of processes may do the
        same and each slot is enqueued once. Slots missed while no worker ran are not caught up."""
        if self._queue is None:
            raise ValueError("periodically_enqueue needs a Worker(queue=...)")
        if not isinstance(spec, str):
            raise TypeError(f"spec must be a str, got {type(spec).__name__}")
        if not isinstance(name, str) or not name:
            raise TypeError(f"job name must be a non-empty str, got {name!r}")
        _core.cron_next(spec, time.time())  # ValueError for a bad spec, here and now
        entry = (spec, name, encode_args(args))
        with self._lock:
            self._periodic.append(entry)
            if self._started and not self._stopped:
                self._cron_tasks.append(self._queue._core.cron(*entry))

    def drain(self, timeout: float | None = None) -> bool:
        """Start if needed; return once no job of this worker's names is ready (and not paused)
        or running (jobs scheduled for later don't count); False on timeout."""
        if self._queue is None:
            raise ValueError("drain needs a Worker(queue=...)")
        timeout = _checks.timeout(timeout)
        self._ensure_started()
        names = set(self._handlers) if self._claim_only is None else self._claim_only
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._failed is not None:
                raise self._failed
            busy = any(
                q.running or (q.ready and not q.paused)
                for q in self._queue.client.queues()
                if q.name in names
            )
            if not busy and self._core.in_flight == 0:
                return True
            if end is not None and time.monotonic() >= end:
                return False
            time.sleep(0.005)

    def use(self, *adapters: Adapter) -> None:
        """Add adapters applied to every handler, outside the handler's own."""
        for adapter in adapters:
            if not callable(adapter):
                raise TypeError(f"adapter must be callable, got {type(adapter).__name__}")
        self._adapters.extend(adapters)
        self._chains.clear()  # the same dict: the core's run path holds it

    def _chain(self, name: str) -> tuple[Handler, bool]:
        chain = self._chains.get(name)
        if chain is None:
            handler = self._handlers.get(name)
            if handler is None:
                raise UnknownHandler(f"no handler registered for {name!r}")
            is_async = is_async_handler(handler)
            # A handler built by wh.adapt() gets the status rules inside its own adapters too,
            # so they see the final status like the worker's adapters do.
            bare, own = unadapt(handler)
            ruled = apply_status_rules(bare, self.logger)
            chain = (adapt(ruled, *own, *self._adapters), is_async)
            self._chains[name] = chain
        return chain

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Worker:
        """Start executing; async handlers use the running loop if called inside one."""
        if self._stopped:
            if self._forked_from is not None:
                raise self._stopped_error()
            raise WorkerStopped(f"{self.name} was stopped; create a new Worker")
        with self._lock:
            if self._started:
                return self
            self._started = True
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                self._loop = None
            self._spawn_sync_thread()
            if self._queue is not None:
                self._start_queue(self._queue)
        return self

    def _start_queue(self, queue: Queue) -> None:
        # One consumer per lane (sync and async handlers), each claiming only its names.
        lanes: dict[bool, list[tuple[str, int, int, int]]] = {False: [], True: []}
        for name in self._handlers:
            if self._claim_only is not None and name not in self._claim_only:
                continue
            _handler, is_async = self._chain(name)
            o = self._queue_options.get(name, _DEFAULT_OPTIONS)
            lanes[is_async].append((name, o.priority, o.max_concurrency, o.max_fails))
        for is_async, wanted in lanes.items():
            if not wanted:
                continue
            if is_async:
                self._ensure_loop_locked()
            key = next(_keys)
            self._queue_keys.append(key)
            self._core.consume(
                key,
                queue._core,
                self.worker_id,
                wanted,
                self.concurrency,  # claims fill free slots only: a claimed job starts at once
                is_async,
                self.concurrency,
                _Repeat(None, None, is_async, Schedule(self, key, "queue")),
            )
        for entry in self._periodic:
            self._cron_tasks.append(queue._core.cron(*entry))
        threading.Thread(target=self._watch_leases, name=f"{self.name}-leases", daemon=True).start()

    def _watch_leases(self) -> None:
        # The consumer could not renew these runs' leases: another worker may run them now and
        # their results will be refused, so they are told to stop (ctx.cancelled; async ones
        # are cancelled). Also hears of a consumer that died (see _fail).
        core = self._core
        while True:
            lost = core.wait_lost(_TAKE_TIMEOUT)
            failure = core.queue_failure
            if failure is not None:
                self._fail(failure)
                return
            if lost is None:
                return
            for job_id, token in lost:
                job = self._queue_running.get(job_id)
                if job is None or job._token != token:
                    continue
                self.logger.warning(
                    "%s: lost the lease of job %s (%s); cancelling it", self.name, job_id, job.name
                )
                job._lease_lost = True  # its outcome is a release, whatever the handler returns
                self._cancel_queued(job)

    def _cancel_queued(self, job: QueueJob) -> None:
        ctx = job._ctx
        if ctx is not None:
            ctx.cancel()
        task = self._queue_task_of.get(job.id)
        loop = self._loop
        if task is not None and loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:
                pass

    def _fail(self, failure: str) -> None:
        # The core's queue consumer or lease renewer died (RELIABILITY.md row 20). Idling on
        # would look alive and claim nothing, and the leases of the runs going now are no longer
        # renewed: so every queue lane stops claiming, the running queued jobs are cancelled
        # (released when they end cancelled; the core still sends their outcomes, fenced) and
        # wait()/drain() raise, so that the process exits and is restarted.
        running = list(self._queue_running.values())
        self._failed = WorkerFailed(f"{self.name}: {failure}; it claims no more jobs")
        self.logger.critical(
            "%s: %s. It claims no more jobs; its %d running queued jobs are cancelled and "
            "released. Restart the process (`workhorse worker` exits with code 70).",
            self.name,
            failure,
            len(running),
        )
        for key in self._queue_keys:
            self._core.cancel(key)
        for job in running:
            self._cancel_queued(job)
        self._changed.set()

    def _ensure_started(self) -> None:
        if not self._started or self._stopped:
            self.start()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            return self._ensure_loop_locked()

    def _ensure_loop_locked(self) -> asyncio.AbstractEventLoop:
        # Called with self._lock held.
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name=f"{self.name}-loop", daemon=True
            )
            thread.start()
            self._loop, self._loop_thread = loop, thread
        if self._feeder is None:
            self._feeder = threading.Thread(
                target=self._feed_loop,
                args=(self._loop,),
                name=f"{self.name}-feeder",
                daemon=True,
            )
            self._feeder.start()
        return self._loop

    def _spawn_sync_thread(self) -> None:
        # Called with self._lock held, or from an executor thread (which takes it).
        if len(self._threads) >= self.concurrency or self._stopped:
            return
        thread = threading.Thread(
            target=self._sync_loop, name=f"{self.name}-{len(self._threads) + 1}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop sources, cancel contexts, wait up to timeout for runs; True if all ended.

        Items a receive schedule had already taken from its source are run, not dropped. Called
        from inside one of this worker's own executions it raises RuntimeError, as
        ThreadPoolExecutor.shutdown(wait=True) does from one of its threads: it would wait for
        itself."""
        timeout = _checks.timeout(timeout)
        if self._on_own_loop():
            raise RuntimeError(
                "stop() inside the worker's event loop would block the async executions it "
                "waits for; use `await worker.aclose()` or `async with worker`"
            )
        if self._in_own_execution():
            raise RuntimeError(
                f"stop() called inside an execution of {self.name} would wait for itself; "
                "stop the worker from outside its handlers"
            )
        if not self._begin_stop():
            return True
        idle = self._wait_with_grace(timeout, self._core.wait_idle)
        self._finish_stop(idle)
        return idle

    def _wait_with_grace(self, timeout: float | None, wait: Callable[[float | None], bool]) -> bool:
        """Wait for running executions; queued jobs get `grace` seconds, then their contexts and
        tasks are cancelled and they are released to the queue, the attempt not counted."""
        if self._queue is None:
            return wait(timeout)
        start = time.monotonic()
        if wait(self._grace if timeout is None else min(self._grace, timeout)):
            return True
        self._grace_over = True
        for ctx in list(self._queue_live):
            ctx.cancel()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            for task in list(self._queue_tasks):
                try:
                    loop.call_soon_threadsafe(task.cancel)
                except RuntimeError:
                    break
        remaining = None if timeout is None else max(0.0, timeout - (time.monotonic() - start))
        return wait(remaining)

    def _begin_stop(self) -> bool:
        with self._lock:
            if self._stopped:
                return False
            self._stopped = True
        self._changed.set()
        # The one-shots the core gives back never started: they were due, or a timer still
        # pending. One a thread had already taken runs.
        unstarted, schedules = self._core.close()
        stopped = WorkerStopped(f"{self.name} stopped before these executions started")
        finish_unstarted(unstarted, stopped)
        if unstarted:
            self.logger.warning(
                "%s stopped with %d executions not started", self.name, len(unstarted)
            )
        for rep in schedules:
            rep.schedule._stop = True
            if rep.schedule.kind not in ("receive", "queue"):
                rep.schedule._end()
            # A receive schedule ends with its end marker, once the items it had already
            # taken from its source have run.
        for ctx in list(self._live):
            ctx.cancel()
        for cron in self._cron_tasks:
            cron.stop()
        self._cron_tasks.clear()
        loop = self._loop
        if self._pumps and loop is not None and not loop.is_closed():
            # Async pumps waiting on their source hold nothing: end them now (their channel
            # closes, the receive schedule drains); one holding an item delivers it first.
            try:
                loop.call_soon_threadsafe(self._cancel_idle_pumps)
            except RuntimeError:
                pass  # the loop closed meanwhile: its tasks are gone with it
        return True

    def _cancel_idle_pumps(self) -> None:
        for task in list(self._pumps):
            if task not in HOLDING:
                task.cancel()

    def _finish_stop(self, idle: bool) -> None:
        if not idle:
            self.logger.warning(
                "%s stop timed out with %d running", self.name, self._core.in_flight
            )
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if self._loop_thread is not None:
            # Our own loop: end its source pumps (and, after a timeout, the handlers still
            # running) while it still runs, then stop it.
            try:
                asyncio.run_coroutine_threadsafe(self._cancel_tasks(not idle), loop).result(2.0)
            except Exception:  # noqa: BLE001 - stopping goes on whatever a task did
                self.logger.warning("%s: tasks did not end within 2 s of stop", self.name)
            loop.call_soon_threadsafe(loop.stop)
            self._loop_thread.join(timeout=1.0)
            if not loop.is_running():
                loop.close()
        elif not idle or self._pumps:
            # The caller's loop, stopped from another thread: cancel without waiting on it.
            for task in list(self._pumps) + (list(self._tasks) if not idle else []):
                loop.call_soon_threadsafe(task.cancel)

    async def _cancel_tasks(self, handlers: bool) -> None:
        tasks = [t for t in self._pumps if not t.done()]
        if handlers:
            tasks += [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)

    async def _pump(self, coro: Awaitable[None]) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._pumps.add(task)
        try:
            await coro
        finally:
            self._pumps.discard(task)

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Worker:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self, timeout: float | None = None) -> bool:
        """stop() for asyncio code: waits without blocking the running loop."""
        timeout = _checks.timeout(timeout)
        if asyncio.current_task() in self._tasks:
            raise RuntimeError(
                f"aclose() called inside an execution of {self.name} would wait for itself"
            )
        if not self._begin_stop():
            return True
        loop = asyncio.get_running_loop()
        idle = await loop.run_in_executor(
            None, self._wait_with_grace, timeout, self._core.wait_idle
        )
        if self._loop is loop:
            await self._cancel_tasks(not idle)
        self._finish_stop(idle)
        return bool(idle)

    def _in_own_execution(self) -> bool:
        """True in one of this worker's executor threads or inside its sync perform."""
        current = threading.current_thread()
        return current in self._threads or current.ident in self._inline

    def _on_own_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    @property
    def running(self) -> int:
        """Executions in flight."""
        return int(self._core.in_flight)

    @property
    def failed(self) -> WorkerFailed | None:
        """Why the worker's queue consumer died (a panic in the core), or None."""
        return self._failed

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker is stopped (True) or `timeout` seconds pass (False); raises
        WorkerFailed once its queue consumer has died, so a process that only waits on its
        worker exits instead of idling."""
        timeout = _checks.timeout(timeout)
        stopped = self._changed.wait(timeout)
        if self._failed is not None:
            raise self._failed
        return stopped

    def stats(self) -> dict[str, Any]:
        """Counts by status, in-flight and scheduled figures."""
        figures = self._core.figures()
        by_status: dict[int, int] = dict(figures["by_status"])
        return {
            "by_status": by_status,
            "completed": sum(by_status.values()),
            "in_flight": figures["in_flight"],
            "scheduled": figures["scheduled"],
            "receiving": figures["receiving"],
            "queued": figures["due"] + figures["ready"],
            "interval_skipped_ticks": figures["interval_skipped_ticks_total"],
            "core_panics": _core.core_panics(),
        }

    def figures(self) -> dict[str, float]:
        """Raw figures of the core (scheduled timers, queue depths, permits, interval lateness)."""
        raw = self._core.figures()
        figures = {k: float(v) for k, v in raw.items() if isinstance(v, (int, float))}
        cumulative = 0
        for bound, count in zip(
            raw["interval_lateness_bounds"], raw["interval_lateness_buckets"], strict=False
        ):
            cumulative += count
            figures[f"{LATENESS_LE}{bound!r}"] = float(cumulative)
        return figures

    # -- performing ---------------------------------------------------------------------------

    def _check_job(self, job: Job) -> tuple[Handler, bool]:
        if not isinstance(job, Job):
            raise TypeError(f"job must be a wh.Job, got {type(job).__name__}")
        return self._chain(job.handler)

    def _stopped_error(self) -> WorkerStopped:
        if self._forked_from is not None:
            return WorkerStopped(
                f"{self.name} was started in process {self._forked_from}, which forked this one; "
                "its threads do not exist here: create a new Worker in the child"
            )
        return WorkerStopped(f"{self.name} is stopped")

    def perform(self, job: Job, *, sync: bool = False) -> Any:
        """Run job now. sync: wait here, return the Status, re-raise the handler's exception.
        Otherwise return an Execution handle at once."""
        # The common case written out: this runs once per job of a burst.
        chain = self._chains.get(job.handler) if type(job) is Job else None
        handler, is_async = chain if chain is not None else self._check_job(job)
        if sync:
            return self._perform_sync(job, handler, is_async)
        if not self._started:
            self.start()
        execution = Execution(job)
        self._submit(execution, is_async)
        return execution

    def _submit(self, record: Execution | _Call, is_async: bool) -> None:
        if is_async:
            self._ensure_loop()
        try:
            no_idle = self._core.submit(record, is_async)
        except _core.CoreError:
            raise self._stopped_error() from None
        if no_idle and not is_async and len(self._threads) < self.concurrency:
            with self._lock:
                self._spawn_sync_thread()

    def _perform_sync(self, job: Job, handler: Handler, is_async: bool) -> Status:
        # Runs in the caller's thread, as go-work's sync perform; the core counts it in flight so
        # `running`, `stop()` and the permits of other executions see it.
        if is_async and self._on_own_loop():
            raise RuntimeError(
                "perform(sync=True) of an async handler would block its own event loop; "
                "use `await worker.perform(job)` instead"
            )
        try:
            self._core.begin_inline()
        except _core.CoreError:
            raise self._stopped_error() from None
        status = Status.INTERNAL_ERROR
        ident = threading.get_ident()
        inline = self._inline
        nested = ident in inline
        inline.add(ident)
        try:
            ctx = self._perform_inline(job, handler, is_async)
            status = ctx.status
        finally:
            if not nested:
                inline.discard(ident)
            self._core.done(0, status)
        if ctx.error is not None and status >= 400:
            raise ctx.error
        return status

    def _perform_inline(self, job: Job, handler: Handler, is_async: bool) -> Context:
        if is_async:
            loop = self._ensure_loop()
            return asyncio.run_coroutine_threadsafe(self._run_async(job, handler), loop).result()
        return self._run_job(job, handler)

    def perform_at(self, job: Job, when: float | _dt.datetime) -> Schedule:
        """Run job once at when (datetime, or epoch seconds); a past time runs at once."""
        epoch = _checks.epoch(when)
        return self._perform_once_at(job, max(0.0, epoch - time.time()), "at")

    def perform_in(self, job: Job, delay: float | _dt.timedelta) -> Schedule:
        """Run job once after delay (seconds or timedelta, >= 0)."""
        return self._perform_once_at(job, _checks.delay(delay), "in")

    def _perform_once_at(self, job: Job, delay: float, kind: str) -> Schedule:
        handler, is_async = self._check_job(job)
        self._ensure_started()
        if is_async:
            self._ensure_loop()
        try:
            # The Schedule and its Execution are made by the core with the timer entry.
            return self._core.schedule_once(next(_keys), delay, is_async, job, kind, self)
        except _core.CoreError:
            raise self._stopped_error() from None

    def perform_every(
        self, job: Job, interval: float | _dt.timedelta, *, sync: bool = False
    ) -> Schedule:
        """Run job now and then on every tick of a fixed-rate clock (start + n * interval).

        sync=True never overlaps: ticks that fall while a run is going (or waiting for a permit)
        are skipped, not queued. sync=False fires on every tick even if earlier runs still go.
        """
        seconds = _checks.period(interval)
        handler, is_async = self._check_job(job)
        rep = self._new_repeat(job, handler, is_async, "every")
        schedule = rep.schedule
        try:
            self._core.every(schedule.key, _core.monotonic(), seconds, sync, is_async, rep)
        except _core.CoreError:
            raise self._stopped_error() from None
        return schedule

    def _new_repeat(self, job: Job, handler: Handler, is_async: bool, kind: str) -> _Repeat:
        self._ensure_started()
        if is_async:
            self._ensure_loop()
        return _Repeat(job, handler, is_async, Schedule(self, next(_keys), kind))

    def perform_receive(self, job: Job, source: Any, *, sync: bool = False) -> Schedule:
        """Run a copy of job per item of source, the item at job.args["received_data"].

        source: wh.Channel, queue.Queue, asyncio.Queue, iterable or async iterable; the schedule
        ends when the source closes or is exhausted. sync=True runs one item at a time.
        """
        kind = source_kind(source)
        handler, is_async = self._check_job(job)
        rep = self._new_repeat(job, handler, is_async, "receive")
        schedule = rep.schedule
        channel = source if kind == "channel" else Channel(1)
        try:
            # A pumped source's private channel drains at stop: what the pump took is run.
            self._core.receive(
                schedule.key, channel, sync, is_async, drain=kind != "channel", record=rep
            )
        except _core.CoreError:
            raise self._stopped_error() from None

        def stopped() -> bool:
            return schedule._stop or self._stopped

        if kind in ("queue.Queue", "iterable"):
            pump_thread(source, channel, stopped)
        elif kind in ("asyncio.Queue", "async iterable"):
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = self._ensure_loop()
            asyncio.run_coroutine_threadsafe(self._pump(pump_async(source, channel, stopped)), loop)
        return schedule

    def _submit_call(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Future[Any]:
        # Executor.submit: a plain callable on the same permits and executor threads.
        if not self._started:
            self.start()
        call = _Call(fn, args, kwargs)
        self._submit(call, False)
        return call


def _handler_options(
    priority: object,
    max_fails: object,
    skip_dead: object,
    max_concurrency: object,
    backoff: object,
    timeout: object,
) -> HandlerOptions:
    """Check @worker.handler(...) options: a wrong one is a TypeError/ValueError naming it."""
    for name, value, low, high in (
        ("priority", priority, 1, 100_000),
        ("max_fails", max_fails, 1, 2**31 - 1),
        ("max_concurrency", max_concurrency, 0, 2**31 - 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if not low <= value <= high:
            raise ValueError(f"{name} must be in {low}..{high}, got {value}")
    if not isinstance(skip_dead, bool):
        raise TypeError(f"skip_dead must be a bool, got {type(skip_dead).__name__}")
    if backoff is not None and not callable(backoff):
        raise TypeError(f"backoff must be a callable (job) -> seconds, got {backoff!r}")
    return HandlerOptions(
        priority=priority,  # type: ignore[arg-type]
        max_fails=max_fails,  # type: ignore[arg-type]
        skip_dead=skip_dead,
        max_concurrency=max_concurrency,  # type: ignore[arg-type]
        backoff=backoff,
        timeout=_checks.job_timeout(timeout),
    )
