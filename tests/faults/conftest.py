"""Fixtures of the fault suite: a redis-server per test (plain or with AOF), and the App harness."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import App
from proxy import Proxy
from redis_server import REDIS_SERVER, RedisServer


def _server(tmp_path: Path, aof: bool) -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(str(directory), aof=aof)
    yield server
    server.kill()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone, no persistence: the test may kill or pause it."""
    yield from _server(tmp_path, aof=False)


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone with `appendfsync always`, restartable by the test."""
    yield from _server(tmp_path, aof=True)


@pytest.fixture
def app(tmp_path: Path, own_redis: RedisServer) -> App:
    return App(tmp_path, own_redis.url, f"f{time.monotonic_ns()}")


@pytest.fixture
def proxy(own_redis: RedisServer) -> Iterator[Proxy]:
    """A TCP proxy in front of this test's redis-server (tests/faults/proxy.py): clients that
    connect to `proxy.url()` go through it, and the test makes it misbehave."""
    p = Proxy(own_redis.port)
    yield p
    p.close()
