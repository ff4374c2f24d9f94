"""Durable queues (gocraft/work's model): `Queue`, `Result`, the client and its records.

The backends live in the Rust core (rust/src/queue/): `memory://` in this process, `redis://`
shared by processes and machines. A `Worker(queue=...)` claims jobs for the names it has handlers
for; they run through the same dispatcher, executor lanes, status rules and adapters as
in-process jobs.
"""

from __future__ import annotations

from workhorse.queue.client import BusyWorker, Client, Page, QueueInfo, WorkerPool
from workhorse.queue.job import QueuedJob, QueueJob
from workhorse.queue.outcome import HandlerOptions, default_backoff
from workhorse.queue.queue import Queue
from workhorse.queue.result import Result

__all__ = [
    "BusyWorker",
    "Client",
    "HandlerOptions",
    "Page",
    "Queue",
    "QueueInfo",
    "QueueJob",
    "QueuedJob",
    "Result",
    "WorkerPool",
    "default_backoff",
]
