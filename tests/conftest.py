"""Shared fixtures: workers that always stop, deadline-bounded waits, a concurrency tracker."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from support import apoll_until, poll_until

import workhorse as wh

# Teardown must never hang a run: a worker left with a stuck handler gets this long to drain.
STOP_TIMEOUT = 2.0


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


# -- a real redis-server for the queue tests ------------------------------------------------------


class RedisServer:
    """A redis-server of our own on a free loopback port (never the machine's 6379)."""

    def __init__(self, tmp: str) -> None:
        import shutil
        import socket
        import subprocess

        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server is not installed (.ci/run installs it)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(str(tmp_path_factory.mktemp("redis")))
    yield server
    server.stop()


_namespaces = iter(range(1, 1_000_000))


@pytest.fixture(params=["memory", "redis"])
def make_queue(request: pytest.FixtureRequest) -> Callable[..., wh.Queue]:
    """Queues on each backend: memory://NAME shared by name, redis with a namespace per test."""
    ns = f"t{next(_namespaces)}"
    if request.param == "redis":
        url = request.getfixturevalue("redis_server").url
    else:
        url = f"memory://{ns}"

    def make(**kwargs: Any) -> wh.Queue:
        return wh.Queue.from_url(url, namespace=ns, **kwargs)

    return make
