"""ConcurrentJob: one job on up to N workers, on-ramped one worker every start_interval.

The core's OnRamp decides which slot to fill and when (slot 1 at start, then one per tick; a slot
whose run ended is refilled at the next tick); a control thread waits on it with the GIL released
and starts the slot's worker in the chosen PerformWith mode.
"""

from __future__ import annotations

import enum
import logging
import signal
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from workhorse import _checks, _core
from workhorse.errors import InvalidHandler, UnknownHandler
from workhorse.execution import Schedule
from workhorse.job import Job
from workhorse.middleware import Adapter, Handler
from workhorse.sources import Channel, pump_thread, source_kind
from workhorse.worker import Worker

__all__ = ["ConcurrentJob", "PerformWith", "live_concurrent_jobs"]

logger = logging.getLogger("workhorse")
_jobs: weakref.WeakSet[ConcurrentJob] = weakref.WeakSet()


def live_concurrent_jobs() -> list[ConcurrentJob]:
    """Started ConcurrentJobs of this process (read by the Prometheus core collector)."""
    return [j for j in list(_jobs) if j._ramp is not None and not j._stopped]


class PerformWith(enum.Enum):
    """How each worker of a ConcurrentJob performs the job."""

    SYNC = "sync"
    ASYNC = "async"
    EVERY_SYNC = "every_sync"
    EVERY_ASYNC = "every_async"
    RECEIVE_SYNC = "receive_sync"
    RECEIVE_ASYNC = "receive_async"

    @property
    def is_sync(self) -> bool:
        return self in (PerformWith.SYNC, PerformWith.EVERY_SYNC, PerformWith.RECEIVE_SYNC)


class ConcurrentJob:
    """Run one job on up to max_workers workers; each worker's context has its worker_number."""

    def __init__(
        self,
        job: Job,
        *,
        perform_with: PerformWith,
        every: float | None = None,
        source: Any = None,
        max_workers: int,
        start_interval: float = 0.0,
        worker_factory: Callable[[int], Worker] | None = None,
        adapters: Iterable[Adapter] = (),
        name: str | None = None,
    ) -> None:
        if not isinstance(job, Job):
            raise TypeError(f"job must be a wh.Job, got {type(job).__name__}")
        if not isinstance(perform_with, PerformWith):
            raise TypeError(f"perform_with must be a wh.PerformWith, got {perform_with!r}")
        if isinstance(max_workers, bool) or not isinstance(max_workers, int):
            raise TypeError(f"max_workers must be an int, got {type(max_workers).__name__}")
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        start_interval = _checks.delay(start_interval, "start_interval")
        if perform_with in (PerformWith.EVERY_SYNC, PerformWith.EVERY_ASYNC):
            if every is None:
                raise ValueError(f"every is required with {perform_with}")
            every = _checks.period(every, "every")
        if perform_with in (PerformWith.RECEIVE_SYNC, PerformWith.RECEIVE_ASYNC):
            if source is None:
                raise ValueError(f"source is required with {perform_with}")
            source_kind(source)
        if worker_factory is not None and not callable(worker_factory):
            raise TypeError("worker_factory must be callable")
        self.job = job
        self.perform_with = perform_with
        self.every = every
        self.source = source
        self.max_workers = max_workers
        self.start_interval = float(start_interval)
        self.name = name or f"concurrent-{job.handler}"
        self._factory = worker_factory
        self._adapters = list(adapters)
        self._handlers: dict[str, Handler] = {}
        self._workers: dict[int, Worker] = {}
        self._ramp: _core.OnRamp | None = None
        self._channel: Any = None
        self._control: threading.Thread | None = None
        self._stopped = False
        self._lock = threading.Lock()
        _jobs.add(self)

    def register(self, name: str, handler: Handler) -> None:
        """Register a handler on every worker this job starts."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"handler name must be a non-empty str, got {name!r}")
        if not callable(handler):
            raise InvalidHandler(
                f"handler for {name!r} must be callable, got {type(handler).__name__}"
            )
        if name in self._handlers:
            raise ValueError(f"a handler named {name!r} is already registered")
        self._handlers[name] = handler

    @property
    def running_workers(self) -> int:
        """Slots whose worker is running the job now."""
        return 0 if self._ramp is None else int(self._ramp.running)

    def start(self) -> ConcurrentJob:
        """Start on-ramping; returns at once."""
        if self._stopped:
            raise RuntimeError(f"{self.name} was stopped; create a new ConcurrentJob")
        if self._ramp is not None:
            return self
        if self.job.handler not in self._handlers and self._factory is None:
            raise UnknownHandler(f"no handler registered for {self.job.handler!r}")
        if self.perform_with in (PerformWith.RECEIVE_SYNC, PerformWith.RECEIVE_ASYNC):
            # Every worker receives from one channel; other sources are pumped into it once, so
            # that workers compete for items instead of each iterating the source.
            if source_kind(self.source) == "channel":
                self._channel = self.source
            else:
                self._channel = Channel(self.max_workers)
                pump_thread(self.source, self._channel, lambda: self._stopped)
        self._ramp = _core.OnRamp(self.max_workers, self.start_interval)
        self._control = threading.Thread(
            target=self._run_ramp, name=f"{self.name}-ramp", daemon=True
        )
        self._control.start()
        return self

    def _source_done(self) -> bool:
        ch = self._channel
        return ch is not None and bool(ch.closed) and len(ch) == 0

    def _run_ramp(self) -> None:
        ramp = self._ramp
        assert ramp is not None
        while not self._stopped:
            slot = ramp.next_slot(0.25)
            if slot is None:
                continue
            if slot == 0:
                return
            if self._source_done():
                ramp.release(slot)
                ramp.close()
                return
            # Under the lock stop() takes to set _stopped: a slot is filled before stop() looks at
            # the workers, or not at all.
            with self._lock:
                if self._stopped:
                    return
                try:
                    self._fill(slot)
                except Exception:  # noqa: BLE001 - a bad slot must not stop the others
                    logger.exception("%s: starting worker %d failed", self.name, slot)
                    ramp.release(slot)

    def _worker(self, slot: int) -> Worker:
        worker = self._workers.get(slot)
        if worker is None:
            if self._factory is not None:
                worker = self._factory(slot)
                if not isinstance(worker, Worker):
                    raise TypeError(
                        f"worker_factory must return a wh.Worker, got {type(worker).__name__}"
                    )
            else:
                worker = Worker(adapters=self._adapters, name=f"{self.name}-{slot}")
            for name, handler in self._handlers.items():
                if name not in worker._handlers:
                    worker.register(name, handler)
            self._workers[slot] = worker
        return worker

    def _fill(self, slot: int) -> None:
        worker = self._worker(slot)
        job = self.job.copy()
        job.ctx.set("worker_number", slot)
        mode = self.perform_with
        if mode is PerformWith.SYNC:
            self._watch(slot, lambda: worker.perform(job, sync=True))
        elif mode is PerformWith.ASYNC:
            execution = worker.perform(job)
            self._watch(slot, execution.wait)
        elif mode in (PerformWith.EVERY_SYNC, PerformWith.EVERY_ASYNC):
            assert self.every is not None
            worker.perform_every(job, self.every, sync=mode.is_sync)
        else:
            schedule: Schedule = worker.perform_receive(job, self._channel, sync=mode.is_sync)
            self._watch(slot, schedule.wait)

    def _watch(self, slot: int, run: Callable[[], object]) -> None:
        def watch() -> None:
            try:
                run()
            except Exception:  # noqa: BLE001 - the handler's error is the worker's to report
                logger.debug("%s: worker %d run raised", self.name, slot, exc_info=True)
            finally:
                if self._ramp is not None and not self._stopped:
                    self._ramp.release(slot)

        threading.Thread(target=watch, name=f"{self.name}-{slot}-watch", daemon=True).start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop ramping and every worker, waiting up to timeout for their runs. Called from the
        job's own handler it returns at once and that worker stops when the handler returns."""
        timeout = _checks.timeout(timeout)
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        if self._ramp is not None:
            self._ramp.close()
        for worker in list(self._workers.values()):
            if worker._in_own_execution():
                # Called from this worker's handler: it cannot wait for itself, so it is stopped
                # from another thread once the handler returns; the others stop here.
                threading.Thread(
                    target=worker.stop, args=(timeout,), name=f"{self.name}-stop", daemon=True
                ).start()
            else:
                worker.stop(timeout)
        if self._control is not None and self._control is not threading.current_thread():
            self._control.join(timeout=1.0)

    def run(self) -> None:
        """Start, block until SIGINT or SIGTERM, then stop (main thread only)."""
        stop = threading.Event()
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, lambda *_: stop.set())
        try:
            self.start()
            while not stop.wait(0.2):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop()

    def __enter__(self) -> ConcurrentJob:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
