"""Bridges from Python sources (queue.Queue, iterables, asyncio queues) into a core Channel.

A `wh.Channel` is read by the core directly. Other sources need Python to read them, so a small
pump (a thread, or a task on the worker's loop) moves their items into a private Channel that the
core's receive loop reads: one code path for back-pressure, sync/async receive and cancellation.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any

from workhorse._core import Channel as _CoreChannel
from workhorse._core import ChannelClosed

__all__ = ["Channel", "HOLDING", "pump_async", "pump_thread", "source_kind"]

_POLL = 0.1  # how often a pump looks at its stop flag while the source or channel is idle
logger = logging.getLogger("workhorse")
# Async pump tasks holding an item taken from their source: stop() cancels only the others (a
# pump waiting on its source holds nothing; one holding an item delivers it first).
HOLDING: set[asyncio.Task[Any]] = set()


class Channel(_CoreChannel):
    """Bounded channel implemented in Rust: send/try_send/recv/close, and `await asend(item)`."""

    async def asend(self, item: Any, timeout: float | None = None) -> None:
        """Send from asyncio; waits in a thread only when the channel is full."""
        if self.try_send(item):
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: self.send(item, timeout))


def source_kind(source: object) -> str:
    """Classify a receive source; TypeError for anything that cannot feed a worker."""
    if isinstance(source, _CoreChannel):
        return "channel"
    if isinstance(source, asyncio.Queue):
        return "asyncio.Queue"
    if isinstance(source, queue.Queue):
        return "queue.Queue"
    if isinstance(source, (str, bytes, bytearray)):
        raise TypeError(
            f"source must be a Channel, queue or iterable of items, not {type(source).__name__}"
        )
    if isinstance(source, AsyncIterable):
        return "async iterable"
    if isinstance(source, Iterable):
        return "iterable"
    raise TypeError(
        "source must be a wh.Channel, queue.Queue, asyncio.Queue, iterable or async iterable, "
        f"got {type(source).__name__}"
    )


def _send(channel: _CoreChannel, item: Any) -> bool:
    # An item taken from the source is delivered even after stop: the worker drains a pump's
    # channel and runs what it took, so nothing taken is dropped. False once the channel closed.
    while True:
        try:
            channel.send(item, _POLL)
            return True
        except TimeoutError:
            continue
        except ChannelClosed:
            return False


def pump_thread(
    source: Any, channel: _CoreChannel, stopped: Callable[[], bool]
) -> threading.Thread:
    """Move items from a queue.Queue or iterable into channel on a daemon thread."""

    def run() -> None:
        try:
            if isinstance(source, queue.Queue):
                shutdown_error = getattr(queue, "ShutDown", None)
                while not stopped():
                    try:
                        item = source.get(timeout=_POLL)
                    except queue.Empty:
                        continue
                    except Exception as exc:  # queue.ShutDown on 3.13+: the source closed
                        if shutdown_error is not None and isinstance(exc, shutdown_error):
                            break
                        raise
                    if not _send(channel, item):
                        _lost(item)
                        break
            else:
                for item in source:
                    if not _send(channel, item):
                        _lost(item)
                        break
                    if stopped():
                        break
        finally:
            channel.close()

    thread = threading.Thread(target=run, name="workhorse-source", daemon=True)
    thread.start()
    return thread


async def pump_async(source: Any, channel: Channel, stopped: Callable[[], bool]) -> None:
    """Move items from an asyncio.Queue or async iterable into channel, on the caller's loop."""
    try:
        if isinstance(source, asyncio.Queue):
            shutdown_error = getattr(asyncio, "QueueShutDown", None)
            while not stopped():
                try:
                    item = await asyncio.wait_for(source.get(), _POLL)
                except (asyncio.TimeoutError, TimeoutError):
                    continue
                except Exception as exc:
                    if shutdown_error is not None and isinstance(exc, shutdown_error):
                        break
                    raise
                if not await _asend_holding(channel, item):
                    break
        else:
            async for item in source:
                if not await _asend_holding(channel, item) or stopped():
                    break
    finally:
        channel.close()


async def _asend_holding(channel: Channel, item: Any) -> bool:
    task = asyncio.current_task()
    if task is not None:
        HOLDING.add(task)
    try:
        if await _asend(channel, item):
            return True
        _lost(item)
        return False
    finally:
        if task is not None:
            HOLDING.discard(task)


async def _asend(channel: Channel, item: Any) -> bool:
    while True:
        try:
            await channel.asend(item, _POLL)
            return True
        except TimeoutError:
            continue
        except ChannelClosed:
            return False


def _lost(item: Any) -> None:
    # Only if the schedule's receive loop ended abnormally: said loudly, never silently.
    logger.error("workhorse: an item taken from a source could not be delivered: %r", item)
