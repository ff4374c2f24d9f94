"""Fixtures for the durable queue suite: each test runs on memory:// and on redis://.

Import them into a test module with `from queue_fixtures import *  # noqa: F403`; helpers that
are not fixtures are imported by name. The redis backend uses a redis-server of this suite's own
(tests/redis_server.py) started once per session, and a namespace of its own per test.
"""

from __future__ import annotations

import atexit
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis_server import REDIS_SERVER, RedisServer

import workhorse as wh

__all__ = [
    "BACKENDS",
    "Runs",
    "info",
    "open_queue",
    "queue",
    "queue_backend",
    "queue_redis",
    "qworker",
    "runs",
    "settle",
]

BACKENDS = ["memory", "redis"]

# A worker left with a stuck handler gets this long at teardown, so a run never hangs.
TEARDOWN_STOP = 3.0

_ids = itertools.count(1)


# One server for the whole session. Each module that star-imports this file gets its own copy
# of the session fixture below, so the server itself is kept here, made once, stopped at the end.
_server: RedisServer | None = None


@pytest.fixture(scope="session")
def queue_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """This suite's redis-server (never the system one on 6379), killed at the session's end."""
    global _server
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (CI installs it): redis backend not tested")
    if _server is None or _server.proc.poll() is not None:
        _server = RedisServer(str(tmp_path_factory.mktemp("queue-redis")))
        atexit.register(_server.stop)  # in case the session ends without teardown
    yield _server
    _server.stop()  # idempotent: the first module's teardown at session end stops it


@pytest.fixture(params=BACKENDS)
def queue_backend(request: pytest.FixtureRequest) -> str:
    """"memory" or "redis": the backend this run of the test uses."""
    return str(request.param)


@pytest.fixture
def open_queue(
    queue_backend: str, request: pytest.FixtureRequest
) -> Callable[..., wh.Queue]:
    """`open_queue(**kwargs)`: another handle on this test's store (memory://NAME shared by a
    name of this test's own; redis with this test's own namespace). kwargs go to from_url."""
    tag = f"qt{os.getpid()}x{next(_ids)}"
    if queue_backend == "redis":
        url = request.getfixturevalue("queue_redis").url
    else:
        url = f"memory://{tag}"

    def open_(**kwargs: Any) -> wh.Queue:
        kwargs.setdefault("namespace", tag)
        return wh.Queue.from_url(url, **kwargs)

    open_.url = url  # type: ignore[attr-defined]
    open_.namespace = tag  # type: ignore[attr-defined]
    return open_


@pytest.fixture
def queue(open_queue: Callable[..., wh.Queue]) -> wh.Queue:
    """A fresh, empty queue on the backend of this run."""
    return open_queue()


@pytest.fixture
def qworker(queue: wh.Queue) -> Iterator[Callable[..., wh.Worker]]:
    """`qworker(**kwargs)`: a Worker on `queue` (not started; grace 1 s unless given), stopped
    with a timeout at teardown."""
    workers: list[wh.Worker] = []

    def make(**kwargs: Any) -> wh.Worker:
        kwargs.setdefault("queue", queue)
        kwargs.setdefault("concurrency", 4)
        kwargs.setdefault("grace", 1.0)
        worker = wh.Worker(**kwargs)
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.stop(timeout=TEARDOWN_STOP)


class Runs:
    """Thread-safe record of queued runs: what each run's job looked like, and when it began."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.items: list[dict[str, Any]] = []

    def add(self, job: Any, **extra: Any) -> None:
        row = {
            "id": job.id,
            "name": job.name,
            "args": dict(job.args),
            "fails": job.fails,
            "last_error": job.last_error,
            "at": time.time(),
            "mono": time.monotonic(),
            **extra,
        }
        with self._cond:
            self.items.append(row)
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._lock:
            return len(self.items)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.items)

    def wait_for(self, n: int, timeout: float = 5.0) -> bool:
        """Wait until at least n runs were recorded."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.items) >= n, timeout)


@pytest.fixture
def runs() -> Runs:
    return Runs()


def info(queue: wh.Queue, name: str) -> Any:
    """The client's QueueInfo for name, or None when the queue does not list it."""
    for q in queue.client.queues():
        if q.name == name:
            return q
    return None


def settle(pred: Callable[[], object], timeout: float = 5.0, interval: float = 0.005) -> Any:
    """Poll pred until it returns something truthy (returned) or the timeout passes (its last
    value, falsy, is returned so the assertion shows it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)
