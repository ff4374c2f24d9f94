"""Shared fixtures: workers that always stop, deadline-bounded waits, a concurrency tracker."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import workhorse as wh

# Teardown must never hang a run: a worker left with a stuck handler gets this long to drain.
STOP_TIMEOUT = 2.0


def poll_until(pred: Callable[[], object], timeout: float = 2.0, interval: float = 0.002) -> bool:
    """Poll pred until it is truthy (True) or timeout seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


async def apoll_until(
    pred: Callable[[], object], timeout: float = 2.0, interval: float = 0.002
) -> bool:
    """poll_until for coroutines: yields to the event loop between looks."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)


class Tracker:
    """Thread-safe record of handler runs: values seen, runs in flight now and at most."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values: list[Any] = []
        self.active = 0
        self.max_active = 0

    def add(self, value: Any = None) -> None:
        with self._lock:
            self.values.append(value)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.values)

    def snapshot(self) -> list[Any]:
        with self._lock:
            return list(self.values)

    @contextmanager
    def running(self) -> Iterator[None]:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            yield
        finally:
            with self._lock:
                self.active -= 1


@pytest.fixture
def wait_until() -> Callable[..., bool]:
    """`assert wait_until(lambda: cond, timeout=2.0)`: poll a condition against a deadline."""
    return poll_until


@pytest.fixture
def await_until() -> Callable[..., Coroutine[Any, Any, bool]]:
    """`assert await await_until(lambda: cond)`: wait_until inside a coroutine."""
    return apoll_until


@pytest.fixture
def tracker() -> Tracker:
    return Tracker()


@pytest.fixture
def make_worker() -> Iterator[Callable[..., wh.Worker]]:
    """Build workers (not started) that are stopped, with a timeout, at teardown."""
    workers: list[wh.Worker] = []

    def make(**kwargs: Any) -> wh.Worker:
        worker = wh.Worker(**kwargs)
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.stop(timeout=STOP_TIMEOUT)


@pytest.fixture
def worker(make_worker: Callable[..., wh.Worker]) -> wh.Worker:
    """A started Worker(concurrency=4), stopped at teardown."""
    return make_worker(concurrency=4).start()


@pytest.fixture
def make_concurrent_job() -> Iterator[Callable[..., wh.ConcurrentJob]]:
    """Build ConcurrentJobs that are stopped, with a timeout, at teardown."""
    jobs: list[wh.ConcurrentJob] = []

    def make(job: wh.Job, **kwargs: Any) -> wh.ConcurrentJob:
        cj = wh.ConcurrentJob(job, **kwargs)
        jobs.append(cj)
        return cj

    yield make
    for cj in jobs:
        cj.stop(timeout=STOP_TIMEOUT)


@pytest.fixture
def run_async() -> Callable[..., Any]:
    """Run a coroutine on a fresh event loop, failing it after timeout seconds."""

    def run(coro: Coroutine[Any, Any, Any], timeout: float = 5.0) -> Any:
        return asyncio.run(asyncio.wait_for(coro, timeout))

    return run


@pytest.fixture
def registry():
    """A fresh Prometheus registry per test (prometheus_client is a dev dependency)."""
    from prometheus_client import CollectorRegistry

    return CollectorRegistry()
