"""perform_receive: one execution per item from a Channel, queues, iterables and async iterables."""

from __future__ import annotations

import asyncio
import gc
import itertools
import queue
import sys
import threading
import time

import pytest

import workhorse as wh

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
def collect(worker, tracker):
    """A registered handler 'collect' that records each received item."""

    def collect(job):
        with tracker.running():
            tracker.add(job.args["received_data"])

    worker.register("collect", collect)
    return tracker


# -- wh.Channel ----------------------------------------------------------------------------------


def test_each_channel_item_runs_once_with_the_item_in_received_data(worker, collect):
    channel = wh.Channel(4)
    schedule = worker.perform_receive(wh.Job("collect"), channel)
    for i in range(20):
        channel.send(i, timeout=2)
    channel.close()
    assert schedule.wait(2)
    assert sorted(collect.snapshot()) == list(range(20))


def test_receive_ends_when_the_channel_closes_and_drains(worker, collect, wait_until):
    channel = wh.Channel(8)
    schedule = worker.perform_receive(wh.Job("collect"), channel)
    channel.send("a")
    assert wait_until(lambda: collect.count == 1)
    assert not schedule.done()
    channel.send("b")
    channel.close()
    assert schedule.wait(2)
    assert sorted(collect.snapshot()) == ["a", "b"]


def test_receive_runs_on_copies_and_leaves_the_job_untouched(worker):
    jobs = []
    worker.register("h", lambda job: jobs.append(job))
    original = wh.Job("h", {"tenant": "t1"})
    schedule = worker.perform_receive(original, [1, 2])
    assert schedule.wait(2)
    assert original.args == {"tenant": "t1"}
    assert all(j is not original for j in jobs)
    assert sorted(j.args["received_data"] for j in jobs) == [1, 2]
    assert all(j.args["tenant"] == "t1" for j in jobs)


def test_receive_items_are_passed_as_is(worker, collect):
    item = {"payload": object()}
    schedule = worker.perform_receive(wh.Job("collect"), [item])
    assert schedule.wait(2)
    assert collect.snapshot()[0] is item


def test_receive_sync_runs_one_item_at_a_time_in_order(worker, tracker):
    def slow(job):
        with tracker.running():
            tracker.add(job.args["received_data"])
            time.sleep(0.005)

    worker.register("slow", slow)
    schedule = worker.perform_receive(wh.Job("slow"), list(range(15)), sync=True)
    assert schedule.wait(3)
    assert tracker.snapshot() == list(range(15))
    assert tracker.max_active == 1


def test_receive_async_overlaps_up_to_the_concurrency(make_worker, tracker):
    worker = make_worker(concurrency=4).start()

    def slow(job):
        with tracker.running():
            tracker.add(job.args["received_data"])
            time.sleep(0.03)

    worker.register("slow", slow)
    schedule = worker.perform_receive(wh.Job("slow"), list(range(16)), sync=False)
    assert schedule.wait(3)
    assert sorted(tracker.snapshot()) == list(range(16))
    assert 2 <= tracker.max_active <= 4


def test_receive_with_an_async_handler(worker):
    seen = []

    async def handler(job):
        await asyncio.sleep(0.001)
        seen.append(job.args["received_data"])

    worker.register("h", handler)
    schedule = worker.perform_receive(wh.Job("h"), range(10))
    assert schedule.wait(2)
    assert sorted(seen) == list(range(10))


def test_two_receivers_on_one_channel_share_its_items(make_worker, tracker):
    a, b = make_worker(concurrency=2).start(), make_worker(concurrency=2).start()

    def handler(job):
        tracker.add(job.args["received_data"])
        time.sleep(0.002)

    a.register("h", handler)
    b.register("h", handler)
    channel = wh.Channel(2)
    schedules = [a.perform_receive(wh.Job("h"), channel), b.perform_receive(wh.Job("h"), channel)]
    for i in range(60):
        channel.send(i, timeout=2)
    channel.close()
    assert all(s.wait(2) for s in schedules)
    assert sorted(tracker.snapshot()) == list(range(60))


def test_cancelled_receive_stops_taking_items_from_the_channel(worker, collect, wait_until):
    channel = wh.Channel(8)
    schedule = worker.perform_receive(wh.Job("collect"), channel)
    channel.send(1)
    assert wait_until(lambda: collect.count == 1)
    assert schedule.cancel() is True
    assert schedule.wait(2)
    channel.send(2)
    channel.send(3)
    time.sleep(0.05)
    assert collect.snapshot() == [1]
    assert len(channel) == 2


def test_schedule_is_done_only_after_the_last_run_finished(worker, wait_until):
    started, release = threading.Event(), threading.Event()

    def hold(job):
        started.set()
        release.wait(2)

    worker.register("hold", hold)
    channel = wh.Channel(1)
    schedule = worker.perform_receive(wh.Job("hold"), channel)
    channel.send("x")
    assert started.wait(2)
    channel.close()
    time.sleep(0.03)
    assert not schedule.done()
    release.set()
    assert schedule.wait(2)


def test_receive_counts_as_receiving_in_stats(worker, collect, wait_until):
    channel = wh.Channel(1)
    schedule = worker.perform_receive(wh.Job("collect"), channel)
    assert worker.stats()["receiving"] == 1
    channel.close()
    assert schedule.wait(2)
    assert wait_until(lambda: worker.stats()["receiving"] == 0)


def test_a_failing_handler_does_not_stop_the_receive(worker, tracker):
    def picky(job):
        tracker.add(job.args["received_data"])
        if job.args["received_data"] % 2:
            raise ValueError("odd")

    worker.register("picky", picky)
    schedule = worker.perform_receive(wh.Job("picky"), range(10), sync=True)
    assert schedule.wait(2)
    assert tracker.snapshot() == list(range(10))
    assert worker.stats()["by_status"] == {200: 5, 500: 5}


# -- queue.Queue ---------------------------------------------------------------------------------


def test_queue_items_are_received(worker, collect, wait_until):
    source: queue.Queue[int] = queue.Queue()
    schedule = worker.perform_receive(wh.Job("collect"), source)
    for i in range(10):
        source.put(i)
    assert wait_until(lambda: collect.count == 10)
    assert sorted(collect.snapshot()) == list(range(10))
    assert not schedule.done(), "a queue.Queue has no end: the schedule runs until cancelled"
    schedule.cancel()
    assert schedule.wait(2)


def test_cancelled_queue_receive_leaves_later_items_in_the_queue(worker, collect, wait_until):
    source: queue.Queue[int] = queue.Queue()
    schedule = worker.perform_receive(wh.Job("collect"), source)
    source.put(1)
    assert wait_until(lambda: collect.count == 1)
    schedule.cancel()
    assert schedule.wait(2)
    time.sleep(0.15)  # the pump looks at its stop flag every 100 ms
    source.put(2)
    time.sleep(0.05)
    assert collect.snapshot() == [1]
    assert source.get_nowait() == 2


@pytest.mark.skipif(not hasattr(queue.Queue, "shutdown"), reason="queue.Queue.shutdown is 3.13+")
def test_queue_shutdown_ends_the_receive(worker, collect):
    source: queue.Queue[int] = queue.Queue()
    schedule = worker.perform_receive(wh.Job("collect"), source)
    source.put(1)
    source.shutdown()
    assert schedule.wait(2)
    assert collect.snapshot() == [1]


# -- iterables -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_source",
    [list, tuple, iter, lambda items: (i for i in items)],
    ids=["list", "tuple", "iterator", "generator"],
)
def test_iterables_are_received_and_end_when_exhausted(worker, collect, make_source):
    schedule = worker.perform_receive(wh.Job("collect"), make_source(range(12)))
    assert schedule.wait(2)
    assert sorted(collect.snapshot()) == list(range(12))


def test_empty_iterable_ends_without_running(worker, collect):
    schedule = worker.perform_receive(wh.Job("collect"), [])
    assert schedule.wait(2)
    assert collect.count == 0


def test_iterable_is_read_lazily_with_back_pressure(worker, wait_until):
    produced = []

    def endless():
        for i in itertools.count():
            produced.append(i)
            yield i

    handled = []

    def slow(job):
        handled.append(job.args["received_data"])
        time.sleep(0.01)

    worker.register("slow", slow)
    schedule = worker.perform_receive(wh.Job("slow"), endless(), sync=True)
    assert wait_until(lambda: len(handled) >= 5)
    # Only a handful of items may wait in the bridge channel ahead of the handler.
    assert len(produced) <= len(handled) + 5
    schedule.cancel()
    assert schedule.wait(2)
    count = len(produced)
    time.sleep(0.05)
    assert len(produced) <= count + 1


# -- asyncio.Queue and async iterables -----------------------------------------------------------


def test_asyncio_queue_on_a_worker_started_outside_a_loop(worker, collect, wait_until):
    source: asyncio.Queue[int] = asyncio.Queue()
    for i in range(5):
        source.put_nowait(i)
    schedule = worker.perform_receive(wh.Job("collect"), source)
    assert wait_until(lambda: collect.count == 5)
    assert sorted(collect.snapshot()) == list(range(5))
    schedule.cancel()
    assert schedule.wait(2)
    # Let the pump see the cancel (it polls every 100 ms) before teardown closes the loop; see
    # test_stop_leaves_no_asyncio_queue_pump_pending_on_the_closed_loop.
    time.sleep(0.15)


def test_stop_leaves_no_asyncio_queue_pump_pending_on_the_closed_loop(monkeypatch):
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    worker = wh.Worker().start()
    try:
        worker.register("h", lambda job: None)
        source: asyncio.Queue[int] = asyncio.Queue()
        source.put_nowait(1)
        schedule = worker.perform_receive(wh.Job("h"), source)
        time.sleep(0.02)
    finally:
        assert worker.stop(timeout=2)
    assert schedule.wait(1)
    del worker, schedule, source
    gc.collect()  # the closed loop and the task still pending on it go now
    assert [repr(u.exc_value) for u in unraisable] == []


def test_asyncio_queue_inside_async_with(make_worker, run_async, await_until):
    worker = make_worker()
    seen = []

    async def handler(job):
        seen.append(job.args["received_data"])

    worker.register("h", handler)

    async def main():
        source: asyncio.Queue[str] = asyncio.Queue()
        async with worker:
            schedule = worker.perform_receive(wh.Job("h"), source)
            for item in "abc":
                await source.put(item)
            assert await await_until(lambda: len(seen) == 3)
            schedule.cancel()

    run_async(main())
    assert sorted(seen) == ["a", "b", "c"]


async def _agen(n):
    for i in range(n):
        await asyncio.sleep(0)
        yield i


def test_async_iterable_on_a_worker_started_outside_a_loop(worker, collect):
    schedule = worker.perform_receive(wh.Job("collect"), _agen(8))
    assert schedule.wait(2)
    assert sorted(collect.snapshot()) == list(range(8))


def test_async_iterable_inside_async_with(make_worker, run_async):
    worker = make_worker()
    seen = []

    async def handler(job):
        seen.append(job.args["received_data"])

    worker.register("h", handler)

    async def main():
        async with worker:
            schedule = worker.perform_receive(wh.Job("h"), _agen(6), sync=True)
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(None, schedule.wait, 2)

    run_async(main())
    assert seen == list(range(6))


def test_async_iterable_class_is_received(worker, collect):
    class Ticker:
        def __init__(self):
            self.n = 0

        def __aiter__(self):
            return self

        async def __anext__(self):
            if self.n == 3:
                raise StopAsyncIteration
            self.n += 1
            return self.n

    schedule = worker.perform_receive(wh.Job("collect"), Ticker())
    assert schedule.wait(2)
    assert sorted(collect.snapshot()) == [1, 2, 3]


# -- stop ----------------------------------------------------------------------------------------


def test_stop_ends_receive_schedules(make_worker):
    worker = make_worker().start()
    worker.register("h", lambda job: None)
    channel = wh.Channel(1)
    schedule = worker.perform_receive(wh.Job("h"), channel)
    assert worker.stop(timeout=2)
    assert schedule.wait(1)
