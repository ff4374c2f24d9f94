"""A worker with a queue at stop: it stops claiming, gives running jobs `grace` seconds, then
cancels them and releases them to the queue without counting an attempt (DESIGN.md section 3)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import workhorse as wh

pytestmark = pytest.mark.timeout(30)


def test_a_job_that_ends_within_grace_is_acked(wait_until, make_queue):
    queue = make_queue()
    worker = wh.Worker(concurrency=2, queue=queue, grace=2.0)
    started = threading.Event()
    release = threading.Event()

    @worker.handler("slow")
    def slow(job):
        started.set()
        release.wait(5)

    queue.enqueue("slow")
    worker.start()
    assert started.wait(5)
    threading.Timer(0.2, release.set).start()
    assert worker.stop(timeout=5)
    assert queue.client.stats()["processed"] == 1
    assert [q.ready for q in queue.client.queues()] == [0]


def test_a_sync_job_past_grace_is_cancelled_and_released_unattempted(wait_until, make_queue):
    queue = make_queue()
    worker = wh.Worker(concurrency=2, queue=queue, grace=0.1)
    started = threading.Event()
    cancelled = []

    @worker.handler("long")
    def long(job):
        started.set()
        cancelled.append(job.ctx.wait_cancelled(5))

    queued = queue.enqueue("long", {"n": 1})
    worker.start()
    assert started.wait(5)
    assert worker.stop(timeout=5)
    assert cancelled == [True]
    (info,) = queue.client.queues()
    assert (info.ready, info.retry, info.dead, info.running) == (1, 0, 0, 0)
    # The next worker runs it as a first attempt.
    seen = []
    again = wh.Worker(concurrency=1, queue=queue)
    again.register("long", lambda job: seen.append((job.id, job.fails, job.args)))
    assert again.drain(5)
    again.stop(2)
    assert seen == [(queued.id, 0, {"n": 1})]


def test_an_async_job_past_grace_is_cancelled_and_released(run_async, make_queue):
    queue = make_queue()
    started = asyncio.Event()

    async def main():
        worker = wh.Worker(concurrency=2, queue=queue, grace=0.1)

        @worker.handler("long")
        async def long(job):
            started.set()
            await asyncio.sleep(10)

        queue.enqueue("long")
        async with worker:
            await asyncio.wait_for(started.wait(), 5)

    run_async(main(), timeout=10)
    (info,) = queue.client.queues()
    assert (info.ready, info.retry, info.dead, info.running) == (1, 0, 0, 0)


def test_claimed_jobs_not_started_at_stop_go_back_to_the_queue(make_queue):
    queue = make_queue()
    worker = wh.Worker(concurrency=1, queue=queue, grace=0.05)
    started = threading.Event()

    @worker.handler("job")
    def job(job):
        started.set()
        job.ctx.wait_cancelled(5)

    queue.enqueue_many([("job", {"i": i}) for i in range(10)])
    worker.start()
    assert started.wait(5)
    assert worker.stop(timeout=5)
    (info,) = queue.client.queues()
    # Nothing lost, nothing counted: all ten wait again (the running one was released too).
    assert (info.ready, info.running, info.retry, info.dead) == (10, 0, 0, 0)
    assert queue.client.stats()["processed"] == 0


def test_stop_from_a_queued_handler_raises_instead_of_waiting_for_itself(make_queue):
    queue = make_queue()
    worker = wh.Worker(concurrency=1, queue=queue)
    raised = []

    @worker.handler("job")
    def job(job):
        try:
            worker.stop()
        except RuntimeError as exc:
            raised.append(exc)

    queue.enqueue("job")
    assert worker.drain(5)
    assert worker.stop(timeout=5)
    assert len(raised) == 1


def test_an_idle_worker_is_woken_by_each_enqueue_not_by_polling(make_queue):
    # The consumer sleeps up to a second between looks when nothing wakes it; each enqueue must
    # wake it (a lost wake-up shows as a start about a second late).
    queue = make_queue()
    worker = wh.Worker(concurrency=2, queue=queue)
    started: dict[int, float] = {}
    worker.register("ping", lambda job: started.setdefault(job.args["i"], time.monotonic()))
    worker.start()
    try:
        late = 0
        for i in range(20):
            t = time.monotonic()
            queue.enqueue("ping", {"i": i})
            end = t + 3
            while i not in started and time.monotonic() < end:
                time.sleep(0.0005)
            assert i in started
            late += started[i] - t > 0.5
            time.sleep(0.01)
        assert late <= 2, late
    finally:
        worker.stop(2)
