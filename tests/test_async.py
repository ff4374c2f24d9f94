"""async def handlers: on the running loop inside `async with worker`, else on the worker's own
loop thread; `await execution`; cancellation at the job's timeout."""

from __future__ import annotations

import asyncio
import functools
import threading
import time

import pytest

import workhorse as wh

pytestmark = pytest.mark.timeout(10)


# -- inside `async with worker`: the running loop ------------------------------------------------


def test_async_handler_runs_on_the_running_loop_inside_async_with(make_worker, run_async):
    worker = make_worker()
    seen = {}

    async def handler(job):
        seen["loop"] = asyncio.get_running_loop()
        seen["thread"] = threading.get_ident()

    worker.register("h", handler)

    async def main():
        async with worker as started:
            assert started is worker
            status = await worker.perform(wh.Job("h"))
            return status, asyncio.get_running_loop(), threading.get_ident()

    status, loop, thread = run_async(main())
    assert status is wh.Status.SUCCESS
    assert seen == {"loop": loop, "thread": thread}


def test_await_execution_returns_the_status_without_raising(make_worker, run_async):
    worker = make_worker()

    async def fail(job):
        raise ValueError("async boom")

    worker.register("fail", fail)

    async def main():
        async with worker:
            execution = worker.perform(wh.Job("fail"))
            return await execution, execution

    status, execution = run_async(main())
    assert status is wh.Status.INTERNAL_ERROR
    assert isinstance(execution.error, ValueError)


def test_await_a_finished_execution_returns_at_once(make_worker, run_async):
    worker = make_worker()

    async def handler(job):
        return None

    worker.register("h", handler)

    async def main():
        async with worker:
            execution = worker.perform(wh.Job("h"))
            first = await execution
            assert execution.done()
            return first, await execution

    assert run_async(main()) == (wh.Status.SUCCESS, wh.Status.SUCCESS)


def test_sync_handler_inside_async_with_runs_on_an_executor_thread(make_worker, run_async):
    worker = make_worker()
    worker.register("h", lambda job: job.ctx.set("thread", threading.get_ident()))

    async def main():
        async with worker:
            job = wh.Job("h")
            status = await worker.perform(job)
            return status, job.ctx.get("thread"), threading.get_ident()

    status, handler_thread, loop_thread = run_async(main())
    assert status is wh.Status.SUCCESS
    assert handler_thread != loop_thread


def test_async_handlers_run_concurrently_on_one_loop(make_worker, run_async, tracker):
    worker = make_worker(concurrency=20)

    async def nap(job):
        with tracker.running():
            await asyncio.sleep(0.1)

    worker.register("nap", nap)

    async def main():
        async with worker:
            start = time.monotonic()
            statuses = await asyncio.gather(*(worker.perform(wh.Job("nap")) for _ in range(20)))
            return statuses, time.monotonic() - start

    statuses, elapsed = run_async(main())
    assert set(statuses) == {wh.Status.SUCCESS}
    assert tracker.max_active == 20
    assert elapsed < 1.0, "20 x 100 ms naps did not overlap"


def test_concurrency_bounds_async_handlers(make_worker, run_async, tracker):
    worker = make_worker(concurrency=3)

    async def nap(job):
        with tracker.running():
            await asyncio.sleep(0.01)

    worker.register("nap", nap)

    async def main():
        async with worker:
            await asyncio.gather(*(worker.perform(wh.Job("nap")) for _ in range(12)))

    run_async(main())
    assert tracker.max_active == 3


def test_leaving_async_with_cancels_contexts_and_waits_for_handlers(make_worker, run_async):
    worker = make_worker()
    started, ended = asyncio.Event(), []

    async def until_cancelled(job):
        started.set()
        while not job.ctx.cancelled:
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.02)  # wrapping up: the exit must wait for this
        ended.append(True)

    worker.register("h", until_cancelled)

    async def main():
        async with worker:
            execution = worker.perform(wh.Job("h"))
            await asyncio.wait_for(started.wait(), 2)
        return execution

    execution = run_async(main())
    assert ended == [True]
    assert execution.done()


def test_perform_sync_of_an_async_handler_on_its_own_loop_is_refused(make_worker, run_async):
    worker = make_worker()

    async def handler(job):
        return None

    worker.register("h", handler)

    async def main():
        async with worker:
            with pytest.raises(RuntimeError, match="await"):
                worker.perform(wh.Job("h"), sync=True)

    run_async(main())


def test_sync_stop_on_the_workers_own_loop_is_refused_and_aclose_stops_it(make_worker, run_async):
    worker = make_worker()
    started, done = [], []

    async def handler(job):
        started.append(job.args["n"])
        await asyncio.sleep(0.05)
        done.append(job.args["n"])

    worker.register("h", handler)

    async def main():
        worker.start()
        for n in range(3):
            worker.perform(wh.Job("h", {"n": n}))
        while len(started) < 3:  # stop() only waits for executions that started
            await asyncio.sleep(0.005)
        with pytest.raises(RuntimeError, match="aclose"):
            worker.stop()
        assert await worker.aclose(timeout=2) is True

    run_async(main())
    assert sorted(done) == [0, 1, 2]
    with pytest.raises(wh.WorkerStopped):
        worker.perform(wh.Job("h", {"n": 9}))


def test_every_with_an_async_handler_ticks_on_the_running_loop(make_worker, run_async, await_until):
    worker = make_worker()
    loops = []

    async def tick(job):
        loops.append(asyncio.get_running_loop())

    worker.register("tick", tick)

    async def main():
        async with worker:
            schedule = worker.perform_every(wh.Job("tick"), 0.01)
            assert await await_until(lambda: len(loops) >= 3)
            schedule.cancel()
            return asyncio.get_running_loop()

    loop = run_async(main())
    assert set(loops) == {loop}


# -- started outside a loop: the worker's own loop thread ----------------------------------------


def test_async_handler_runs_on_the_workers_own_loop_thread(worker):
    seen = []

    async def handler(job):
        seen.append((asyncio.get_running_loop(), threading.get_ident()))

    worker.register("h", handler)
    for _ in range(3):
        assert worker.perform(wh.Job("h")).wait(2) is wh.Status.SUCCESS
    assert len(set(seen)) == 1, "async handlers ran on more than one loop/thread"
    (_, thread), *_ = seen
    assert thread != threading.get_ident()


def test_perform_sync_of_an_async_handler_from_a_plain_thread(worker):
    async def handler(job):
        await asyncio.sleep(0.001)
        job.ctx.set("ran", True)

    worker.register("h", handler)
    job = wh.Job("h")
    assert worker.perform(job, sync=True) is wh.Status.SUCCESS
    assert job.ctx.get("ran") is True


def test_perform_sync_reraises_an_async_handlers_exception(worker):
    async def fail(job):
        raise LookupError("missing")

    worker.register("fail", fail)
    with pytest.raises(LookupError, match="missing"):
        worker.perform(wh.Job("fail"), sync=True)


def test_await_execution_from_another_loop(worker, run_async):
    release = threading.Event()

    async def handler(job):
        while not release.is_set():
            await asyncio.sleep(0.002)

    worker.register("h", handler)
    execution = worker.perform(wh.Job("h"))

    async def main():
        threading.Timer(0.02, release.set).start()
        return await execution

    assert run_async(main()) is wh.Status.SUCCESS


def test_async_handler_status_rules(worker):
    async def forbidden(job):
        job.ctx.set_status(wh.Status.FORBIDDEN)
        raise PermissionError("no")

    async def bad_args(job):
        job.arg_int("n")

    worker.register("forbidden", forbidden)
    worker.register("bad_args", bad_args)
    assert worker.perform(wh.Job("forbidden")).wait(2) is wh.Status.FORBIDDEN
    assert worker.perform(wh.Job("bad_args")).wait(2) is wh.Status.BAD_REQUEST


def test_async_adapters_wrap_async_handlers(worker):
    trail = []

    def adapter(next_handler):
        async def handler(job):
            trail.append("in")
            await next_handler(job)
            trail.append(("out", job.ctx.status))

        return handler

    async def handler(job):
        trail.append("handler")

    worker.use(adapter)
    worker.register("h", handler)
    assert worker.perform(wh.Job("h")).wait(2) is wh.Status.SUCCESS
    assert trail == ["in", "handler", ("out", wh.Status.SUCCESS)]


@pytest.mark.parametrize("kind", ["partial", "callable_object"])
def test_async_callables_are_run_as_async_handlers(worker, kind):
    async def handler(job, suffix=""):
        job.ctx.set("loop", asyncio.get_running_loop())
        await asyncio.sleep(10)

    class Handler:
        async def __call__(self, job):
            await handler(job)

    fn = functools.partial(handler, suffix="!") if kind == "partial" else Handler()
    worker.register("h", fn)
    job = wh.Job("h", timeout=0.03)
    execution = worker.perform(job)
    assert execution.wait(2) is wh.Status.TIMEOUT
    assert job.ctx.get("loop") is not None
    assert job.ctx.cancelled


# -- timeouts ------------------------------------------------------------------------------------


def test_async_handler_past_its_timeout_is_cancelled(worker, wait_until):
    cancelled = []

    async def slow(job):
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    worker.register("slow", slow)
    job = wh.Job("slow", timeout=0.03)
    start = time.monotonic()
    execution = worker.perform(job)
    assert execution.wait(2) is wh.Status.TIMEOUT
    assert time.monotonic() - start < 1.0
    assert wait_until(execution.done)
    assert execution.status is wh.Status.TIMEOUT
    assert cancelled == [True]
    assert job.ctx.cancelled


def test_await_execution_of_a_timed_out_async_handler(make_worker, run_async):
    worker = make_worker()

    async def slow(job):
        await asyncio.sleep(5)

    worker.register("slow", slow)

    async def main():
        async with worker:
            start = time.monotonic()
            status = await worker.perform(wh.Job("slow", timeout=0.03))
            return status, time.monotonic() - start

    status, elapsed = run_async(main())
    assert status is wh.Status.TIMEOUT
    assert elapsed < 1.0


def test_async_handler_that_finishes_in_time_succeeds(worker):
    async def quick(job):
        await asyncio.sleep(0.001)

    worker.register("quick", quick)
    assert worker.perform(wh.Job("quick", timeout=1.0)).wait(2) is wh.Status.SUCCESS
