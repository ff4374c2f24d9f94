"""workhorse: jobs handled like HTTP requests, scheduled by a Rust (tokio) core.

import workhorse as wh

worker = wh.Worker(concurrency=10)

@worker.handler("email")
def send_email(job: wh.Job) -> None:
    ...

with worker:
    worker.perform(wh.Job("email", {"to": "a@b.c"}))
"""

from __future__ import annotations

from workhorse import _core
from workhorse.adapters.keys import REQUEST_ID, REQUEST_SIZE, RESPONSE_SIZE
from workhorse.concurrent import ConcurrentJob, PerformWith
from workhorse.errors import (
    ArgError,
    ChannelClosed,
    CoreError,
    InvalidHandler,
    QueueError,
    UnknownHandler,
    WorkerFailed,
    WorkerStopped,
)
from workhorse.execution import Execution, Schedule
from workhorse.executor import Executor
from workhorse.job import Context, Job, Session, Trace
from workhorse.middleware import Adapter, Handler, adapt, run_safely
from workhorse.queue import (
    BusyWorker,
    Page,
    Queue,
    QueuedJob,
    QueueInfo,
    QueueJob,
    Result,
    WorkerPool,
)
from workhorse.server import Server, serve
from workhorse.sources import Channel
from workhorse.status import Status
from workhorse.worker import Worker

__version__: str = _core.__version__

__all__ = [
    "REQUEST_ID",
    "REQUEST_SIZE",
    "RESPONSE_SIZE",
    "Adapter",
    "ArgError",
    "BusyWorker",
    "Channel",
    "ChannelClosed",
    "ConcurrentJob",
    "Context",
    "CoreError",
    "Execution",
    "Executor",
    "Handler",
    "InvalidHandler",
    "Job",
    "Page",
    "PerformWith",
    "Queue",
    "QueueError",
    "QueueInfo",
    "QueueJob",
    "QueuedJob",
    "Result",
    "Schedule",
    "Server",
    "Session",
    "Status",
    "Trace",
    "UnknownHandler",
    "Worker",
    "WorkerFailed",
    "WorkerPool",
    "WorkerStopped",
    "adapt",
    "run_safely",
    "serve",
]
