"""Executor: a concurrent.futures.Executor on the workhorse core (ThreadPoolExecutor's API)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor as _BaseExecutor
from concurrent.futures import Future
from concurrent.futures.thread import BrokenThreadPool
from typing import Any, ParamSpec, TypeVar

from workhorse.worker import Worker

__all__ = ["Executor"]

logger = logging.getLogger("workhorse")
_P = ParamSpec("_P")
_T = TypeVar("_T")


class Executor(_BaseExecutor):
    """Drop-in for ThreadPoolExecutor: calls run on the core's permits and executor threads."""

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_workers is None:
            max_workers = min(32, (os.cpu_count() or 1) + 4)
        if isinstance(max_workers, bool) or not isinstance(max_workers, int):
            raise TypeError(f"max_workers must be an int, got {type(max_workers).__name__}")
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        self._max_workers = max_workers
        self._worker = Worker(concurrency=max_workers, name=thread_name_prefix or None)
        self._shutdown = False
        self._shutdown_lock = threading.Lock()
        self._broken: str | None = None
        if initializer is not None:
            self._worker._thread_init = lambda: self._initialize(initializer, initargs)

    def _initialize(self, initializer: Callable[..., object], initargs: tuple[Any, ...]) -> bool:
        # Run in each executor thread before its first call, as ThreadPoolExecutor does; a
        # failing initializer breaks the pool: later submits raise BrokenThreadPool.
        try:
            initializer(*initargs)
        except BaseException:  # noqa: BLE001 - reported, and the pool is marked broken
            logger.exception("Exception in initializer:")
            self._broken = "A thread initializer failed, the thread pool is not usable anymore"
            return False
        return True

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        """Schedule fn(*args, **kwargs) and return its Future."""
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        if self._broken:
            raise BrokenThreadPool(self._broken)
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        return self._worker._submit_call(fn, args, kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting calls; run what was submitted (or cancel it), waiting if asked."""
        with self._shutdown_lock:
            self._shutdown = True
        worker = self._worker
        if wait and worker._in_own_execution():
            # As ThreadPoolExecutor: a call cannot wait for the pool that runs it to end.
            raise RuntimeError("cannot shutdown(wait=True) from inside a call of this executor")
        if cancel_futures or not worker._started or self._broken:
            # A broken pool has no thread left to run what is queued: cancel it too.
            # Calls not yet started are cancelled by stop(); running ones finish.
            if wait:
                worker.stop()
            else:
                worker._begin_stop()
            return
        if wait:
            worker._core.wait_idle(None)
            worker.stop()
        else:
            threading.Thread(
                target=self._drain, name="workhorse-executor-shutdown", daemon=True
            ).start()

    def _drain(self) -> None:
        self._worker._core.wait_idle(None)
        self._worker.stop()

    def __repr__(self) -> str:
        return f"Executor(max_workers={self._max_workers})"
