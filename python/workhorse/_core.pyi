"""The compiled core (rust/src): the exact boundary between Python and the tokio engine."""

import asyncio
from collections.abc import Callable, Generator, Iterable, Mapping
from typing import Any, final

from typing_extensions import Self, disjoint_base

from workhorse.job import Session, Trace
from workhorse.status import Status

__all__ = [
    "Channel",
    "Context",
    "Execution",
    "Schedule",
    "Repeat",
    "Job",
    "Dispatcher",
    "ExecPath",
    "OnRamp",
    "QueueCore",
    "CronTask",
    "cron_next",
    "new_job_id",
    "monotonic",
    "shutdown",
    "pending_timers",
    "settle",
    "finish_unstarted",
    "gc_exempt",
    "core_panics",
    "Meter",
    "Measured",
    "WithRequestId",
    "HealthTally",
    "Tallied",
    "new_request_id",
    "seed_request_ids",
    "CoreError",
    "ChannelClosed",
    "QueueError",
    "__version__",
]

__version__: str

class CoreError(RuntimeError):
    """An internal error of the core, or a call on a stopped dispatcher."""

class ChannelClosed(RuntimeError):
    """The channel was closed: nothing more can be sent, and it is drained."""

class QueueError(RuntimeError):
    """A durable queue's backend failed or could not be reached."""

def cron_next(spec: str, after: float) -> float:
    """The first slot of a six-field cron spec (seconds first, UTC) after `after` (epoch s)."""

def new_job_id() -> str:
    """A new queue job id: 32 random hex digits."""

# (id, name, args JSON, enqueued_at, run_at, fails, last_error, died_at, reason, meta JSON)
_JobTuple = tuple[
    str, str, str, float, float, int, str | None, float | None, str | None, str | None
]
# (id, name, args JSON, delay, unique key, meta JSON, due time by the backend's clock)
_NewJobTuple = tuple[str, str, str, float, str | None, str | None, float | None]

@final
class CronTask:
    """A running periodic enqueue."""

    def stop(self) -> None: ...

@final
class QueueCore:
    """A queue backend (memory:// or redis://); every call releases the GIL."""

    def __new__(
        cls,
        url: str,
        namespace: str,
        lease: float,
        reaper_interval: float,
        command_timeout: float = ...,
    ) -> Self: ...
    def now(self) -> float: ...
    def enqueue(self, jobs: list[_NewJobTuple]) -> list[_JobTuple | None]: ...
    def enqueue_cb(
        self,
        jobs: list[_NewJobTuple],
        callback: Callable[[list[_JobTuple | None] | None, BaseException | None], None],
    ) -> None: ...
    def checkin(self, id: str, token: int, message: str) -> bool: ...
    def set_paused(self, name: str, paused: bool) -> None: ...
    def queues(self) -> list[tuple[str, int, int, int, int, float, bool, int]]: ...
    def page(self, set: str, page: int, per_page: int) -> tuple[list[_JobTuple], int]: ...
    def retry_dead(self, id: str | None = None) -> int: ...
    def delete(self, set: str, id: str | None = None) -> int: ...
    def reap(self) -> int: ...
    def pools(self) -> list[dict[str, Any]]: ...
    def busy(self) -> list[tuple[str, str, str, float, str | None, float | None]]: ...
    def stats(self) -> tuple[int, int, int, int, int, int]: ...
    def cron(self, spec: str, name: str, args: str) -> CronTask: ...

def monotonic() -> float:
    """time.monotonic() as the core reads it, in seconds."""

def shutdown() -> None:
    """Stop the tokio runtime and the timer thread (interpreter exit)."""

def core_panics() -> int:
    """Panics (bugs) of the core's background threads and tasks, reported on stderr."""

def finish_unstarted(records: Iterable[object], status: Status, error: BaseException) -> None:
    """Resolve executions that never started (a stop) and end their schedules; cancel other
    records (Executor calls)."""

def settle(*objs: object) -> None:
    """Untrack each object from the cyclic GC when nothing it refers to is tracked (Status
    members and Sessions aside), track it again otherwise (rust/src/gc.rs)."""

def gc_exempt(types: list[type]) -> None:
    """Types whose instances never keep a settled object tracked."""

def pending_timers() -> int:
    """Entries in the process-wide timer heap."""

def seed_request_ids(prefix: str) -> None:
    """Start this process's request ids at prefix (16 hex digits), counting from 1."""

def new_request_id() -> str:
    """A new 32-hex-digit request id: the process's prefix and a counter."""

@final
class Meter:
    """The prometheus adapter's figures for one series set, counted in atomics
    (rust/src/adapters.rs)."""

    def __new__(
        cls,
        codes: list[int],
        duration_bounds: list[float],
        size_bounds: list[float],
        size_keys: tuple[str, str],
        final_status: Callable[[Any, BaseException], int],
    ) -> Self: ...
    def wrap(self, handler: Callable[[Any], object], ignored: frozenset[str]) -> Measured: ...
    def start(self, handler: str) -> int: ...
    def finish_async(self, job: Any, started: int, raised: BaseException | None = None) -> None: ...
    def snapshot(
        self,
    ) -> list[tuple[str, dict[int, int], list[int], float, int, list[float], list[float]]]: ...

@final
class Measured:
    """A sync handler the prometheus adapter counts (Meter.wrap)."""

    def __call__(self, job: Any) -> object: ...

@final
class WithRequestId:
    """A sync handler the request_id adapter gives an id."""

    def __new__(
        cls,
        handler: Callable[[Any], object],
        header: str,
        key: str,
        var: Any,
        ensure: Callable[[Any, str], str],
    ) -> Self: ...
    def __call__(self, job: Any) -> object: ...

@final
class HealthTally:
    """The counting half of a health check (rust/src/adapters.rs)."""

    def __new__(
        cls, errors: frozenset[int], clock: Callable[[], float] | None, next: float
    ) -> Self: ...
    def by_window(self, minutes: float) -> None: ...
    def by_count(self, last_n: int) -> None: ...
    def record(self, status: int) -> float | None: ...
    def take_due(self, now: float) -> bool: ...
    def set_next(self, next: float) -> None: ...
    def totals(self, now: float) -> tuple[int, int]: ...
    def wrap(
        self,
        handler: Callable[[Any], object],
        final_status: Callable[[Any, BaseException], int],
        recompute: Callable[[float], None],
    ) -> Tallied: ...

@final
class Tallied:
    """A sync handler whose final statuses a health check counts (HealthTally.wrap)."""

    def __call__(self, job: Any) -> object: ...

@disjoint_base
class Channel:
    """Bounded multi-producer multi-consumer channel of Python objects (flume)."""

    def __new__(cls, capacity: int) -> Self: ...
    def send(self, item: Any, timeout: float | None = None) -> None: ...
    def try_send(self, item: Any) -> bool: ...
    def recv(self, timeout: float | None = None) -> Any: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def capacity(self) -> int: ...
    def __len__(self) -> int: ...

@disjoint_base
class Context:
    """Per-execution state: key/values, the status, the error raised, deadline and cancellation
    (rust/src/context.rs). Values are stored lazily: an execution that sets none has no dict.

    An execution's context leaves the cyclic GC when it ends holding nothing that can close a
    cycle (rust/src/gc.rs); setting a value that can keeps it tracked."""

    def __new__(
        cls,
        session: Session | None = None,
        deadline: float | None = None,
        values: dict[str, Any] | None = None,
        scheduled_at: float | None = None,
    ) -> Self: ...
    @property
    def status(self) -> Status:
        """The execution's Status; assigning an int that is not a member stores its class, and
        anything that is not an int raises TypeError (the handler's error, not the worker's)."""
    @status.setter
    def status(self, value: int) -> None: ...
    error: BaseException | None
    deadline: float | None
    scheduled_at: float | None
    """time.monotonic() at which the core made this execution due (an interval's ideal tick)."""
    session: Session
    def get(self, key: str, default: Any = None) -> Any: ...
    def set(self, key: str, value: Any) -> None: ...
    def values(self) -> dict[str, Any]:
        """A copy of every key/value set on this context."""
    def set_status(self, status: int) -> None: ...
    @property
    def cancelled(self) -> bool:
        """True once the worker stopped or the deadline passed: a handler should wrap up."""
    def cancel(self) -> None:
        """Mark the execution cancelled and wake handlers blocked in wait_cancelled()."""
    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Block until cancelled or past the deadline, at most timeout s; True if cancelled."""
    # The worker's and the adapters' view: stored as is, without coercion.
    _status: Status
    _values: dict[str, Any] | None
    _cancelled: bool
    _executing: bool
    @property
    def _started(self) -> float: ...
    _trace: Trace | None
    _result: object

@disjoint_base
class Job:
    """A unit of work: a handler name, its arguments, and a fresh Context on every execution
    (rust/src/job.rs).

    A job whose args hold only atoms (str, int, float, ...) stays out of the cyclic GC
    (rust/src/gc.rs); it is looked at again when made, copied, and when each execution ends."""

    handler: str
    args: dict[str, Any]
    queue: str
    timeout: float | None
    def __new__(
        cls,
        handler: str,
        args: Mapping[str, Any] | None = None,
        *,
        queue: str = "default",
        timeout: float | None = None,
    ) -> Self: ...
    def __init__(
        self,
        handler: str,
        args: Mapping[str, Any] | None = None,
        *,
        queue: str = "default",
        timeout: float | None = None,
    ) -> None: ...
    @property
    def ctx(self) -> Context:
        """The current execution's Context (values set before performing are carried into it)."""
    @ctx.setter
    def ctx(self, ctx: Context) -> None: ...
    @property
    def id(self) -> str:
        """Process-unique id of this job object (copies get their own)."""
    @property
    def trace(self) -> Trace:
        """Step timings of the current execution (job.trace.mark("step")), counted from the
        start of the execution."""
    def copy(self) -> Job:
        """A deep copy of the arguments with a fresh Context and a new id."""
    def _fork(self) -> Job: ...
    def arg_str(self, key: str) -> str: ...
    def arg_int(self, key: str) -> int: ...
    def arg_float(self, key: str) -> float: ...
    def arg_bool(self, key: str) -> bool: ...
    # The core's view: the current execution's context, the values seeding every execution.
    _ctx: Context | None
    _seed: dict[str, Any] | None
    _id: str | None

@final
class Execution:
    """Handle of one asynchronous perform: `wait()`, `done()`, `status`, `error`, `await`
    (rust/src/execution.rs)."""

    job: Job
    """The job this execution runs: the job performed, or its fork when another execution of
    the same Job object was running when this one started."""
    schedule: Schedule | None
    error: BaseException | None
    def __new__(cls, job: Job, schedule: Schedule | None = None) -> Self: ...
    def __init__(self, job: Job, schedule: Schedule | None = None) -> None: ...
    @property
    def status(self) -> Status:
        """The final status once done; TIMEOUT once the job's deadline passed; else UNKNOWN."""
    def done(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> Status:
        """Block until done (TIMEOUT once the job's deadline passes); never raises its error."""
    def __await__(self) -> Generator[Any, None, Status]: ...
    # The worker's view.
    _ctx: Context | None
    _status: Status
    _done: bool
    @property
    def _waiters(self) -> int: ...
    @property
    def _futures(self) -> list[asyncio.Future[Status]] | None: ...
    def _awaiters(self) -> list[asyncio.Future[Status]]: ...
    def _past_deadline(self) -> bool: ...
    def _finish(self, status: Status, error: BaseException | None) -> None: ...
    @staticmethod
    def _wake_waiters() -> None: ...

@final
class Schedule:
    """Handle of a timer, interval or receive schedule: `cancel()`, `done()`, `wait()`
    (rust/src/execution.rs)."""

    def __new__(cls, worker: Any, key: int, kind: str) -> Self: ...
    @property
    def key(self) -> int: ...
    @property
    def kind(self) -> str: ...
    execution: Execution | None
    """A one-shot schedule's (`perform_at`, `perform_in`) execution."""
    def cancel(self) -> bool:
        """Stop the schedule; runs already started finish. False if it had already ended."""
    @property
    def cancelled(self) -> bool: ...
    def done(self) -> bool:
        """True once the schedule produces nothing more and its last run finished."""
    def wait(self, timeout: float | None = None) -> bool:
        """Block until done() (a receive source closed, a timer ran); False on timeout."""
    def _end(self) -> None: ...
    @property
    def _worker(self) -> Any: ...
    _ended: bool
    _stop: bool
    @property
    def _waiters(self) -> int: ...

@final
class Dispatcher:
    """Per-worker dispatcher: sources make keys due, permits admit them to ready lanes."""

    def __new__(cls, concurrency: int) -> Self: ...
    def submit(self, record: Any, is_async: bool) -> bool: ...
    def schedule_once(
        self, key: int, delay: float, is_async: bool, job: Job, kind: str, worker: Any
    ) -> Schedule: ...
    def begin_inline(self) -> None: ...
    def schedule_at(self, key: int, when: float, is_async: bool, record: Any = None) -> None: ...
    def every(
        self,
        key: int,
        first: float,
        period: float,
        sync: bool,
        is_async: bool,
        record: Any = None,
    ) -> None: ...
    def receive(
        self,
        key: int,
        channel: Channel,
        sync: bool,
        is_async: bool,
        drain: bool = False,
        record: Any = None,
    ) -> None: ...
    def consume(
        self,
        key: int,
        queue: QueueCore,
        worker_id: str,
        wanted: list[tuple[str, int, int, int]],
        prefetch: int,
        is_async: bool,
        concurrency: int,
        record: Any = None,
    ) -> None: ...
    def done_claim(
        self,
        key: int,
        status: int,
        id: str,
        name: str,
        token: int,
        outcome: str,
        delay: float = 0.0,
        text: str | None = None,
        args: str | None = None,
    ) -> None: ...
    def wait_lost(self, timeout: float) -> list[tuple[str, int]] | None: ...
    def cancel(self, key: int) -> bool: ...
    def take(
        self, is_async: bool, max_n: int, timeout: float, returning: bool = False
    ) -> list[tuple[int, Any, Any, float, bool]] | None: ...
    def run_sync(
        self,
        run: Callable[[int, Any, Any, float, bool], int | None],
        spawn: Callable[[], None],
        checkpoint: Callable[[], None],
        path: ExecPath | None = None,
    ) -> None: ...
    def done(self, key: int, status: int = ...) -> None: ...  # status defaults to -1
    def close(self) -> tuple[list[Any], list[Any]]: ...
    def wait_idle(self, timeout: float | None) -> bool: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    @property
    def queue_failure(self) -> str | None: ...
    def figures(self) -> dict[str, Any]: ...

@final
class Repeat:
    """The record of an interval or receive schedule, or of a queue consumer (job and handler
    None: each claimed job names its handler)."""

    @property
    def job(self) -> Job | None: ...
    @property
    def handler(self) -> Callable[[Job], object] | None: ...
    @property
    def is_async(self) -> bool: ...
    @property
    def schedule(self) -> Schedule: ...
    @property
    def receives(self) -> bool: ...
    def __new__(
        cls,
        job: Job | None,
        handler: Callable[[Job], object] | None,
        is_async: bool,
        schedule: Schedule,
    ) -> Self: ...

@final
class ExecPath:
    """One sync execution's plumbing in the core: its Context, the claim on its Job, the final
    status (rust/src/dispatch/run.rs)."""

    def __new__(
        cls,
        running: dict[int, Any],
        live: set[Any],
        session: Any,
        statuses: tuple[Any, Any, Any],
        on_error: Callable[[Any, BaseException], None],
        on_result: Callable[[Any, object], None],
        one_shots: tuple[dict[str, Any], Callable[[str], Any]],
        report: Callable[[BaseException], None],
    ) -> Self: ...
    def begin(self, job: Any, due: float | None, execution: Any = None) -> Any: ...
    def run(
        self,
        job: Any,
        handler: Callable[[Any], object],
        due: float | None = None,
        execution: Any = None,
        live: set[Any] | None = None,
    ) -> Any: ...

@final
class OnRamp:
    """Which ConcurrentJob slot to fill next, and when."""

    def __new__(cls, max_workers: int, start_interval: float) -> Self: ...
    def next_slot(self, timeout: float) -> int | None: ...
    def release(self, slot: int) -> None: ...
    def close(self) -> None: ...
    @property
    def running(self) -> int: ...
