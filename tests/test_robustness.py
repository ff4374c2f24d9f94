"""Regression tests for defects found using the core as a user would (issue 6, items 1-10).

Each test pins down behaviour that was broken: one bad execution breaking a worker, template jobs
sharing a context, far deadlines firing at once, NaN reaching the core, stop() from inside a
handler, a forked child, Python objects dropped under the dispatcher lock, received items lost at
stop, and ConcurrentJob's state after stop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import os
import threading
import time

import pytest
from support import poll_until

import workhorse as wh
from workhorse import job as job_module

# -- 1. one bad execution never ends an executor thread ---------------------------------------


def test_a_status_that_is_not_an_int_is_the_handlers_error_and_the_worker_goes_on(make_worker):
    worker = make_worker(concurrency=1).start()

    def bad(job):
        job.ctx.status = "404"

    worker.register("bad", bad)
    worker.register("ok", lambda job: None)
    execution = worker.perform(wh.Job("bad"))
    assert execution.wait(2) is wh.Status.INTERNAL_ERROR
    assert isinstance(execution.error, TypeError)
    assert "status" in str(execution.error)
    for _ in range(3):  # the single executor thread is still alive
        assert worker.perform(wh.Job("ok")).wait(2) is wh.Status.SUCCESS


def test_a_status_that_is_not_an_int_fails_an_async_handler_too(make_worker, run_async):
    async def bad(job):
        job.ctx.status = 3.5

    async def main():
        async with make_worker(concurrency=1) as worker:
            worker.register("bad", bad)
            worker.register("ok", lambda job: None)
            execution = worker.perform(wh.Job("bad"))
            assert await execution is wh.Status.INTERNAL_ERROR
            assert isinstance(execution.error, TypeError)
            assert await worker.perform(wh.Job("ok")) is wh.Status.SUCCESS

    run_async(main())


def test_an_error_resolving_a_handle_does_not_end_the_executor_thread(make_worker, monkeypatch):
    worker = make_worker(concurrency=1).start()
    worker.register("ok", lambda job: None)
    real_finish = wh.Execution._finish
    broken = []

    def finish(self, status, error):
        if not broken:
            broken.append(1)
            raise RuntimeError("injected: resolving the handle failed")
        real_finish(self, status, error)

    monkeypatch.setattr(wh.Execution, "_finish", finish)
    worker.perform(wh.Job("ok"))
    assert worker.perform(wh.Job("ok")).wait(2) is wh.Status.SUCCESS


# -- 2. an awaiter whose loop closed ----------------------------------------------------------


def test_an_awaiter_whose_event_loop_closed_does_not_break_the_lane(make_worker):
    worker = make_worker(concurrency=1).start()
    release = threading.Event()
    worker.register("slow", lambda job: release.wait(2))
    worker.register("ok", lambda job: None)
    slow = worker.perform(wh.Job("slow"))

    async def give_up():
        await asyncio.wait_for(slow, 0.01)

    with pytest.raises((asyncio.TimeoutError, TimeoutError)):
        asyncio.run(give_up())  # the awaiter's loop is closed when slow ends
    release.set()
    assert slow.wait(2) is wh.Status.SUCCESS
    assert worker.perform(wh.Job("ok")).wait(2) is wh.Status.SUCCESS


# -- 3. one Job performed several times at once ----------------------------------------------


def test_each_concurrent_execution_of_one_job_has_its_own_context(make_worker):
    worker = make_worker(concurrency=4).start()
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()
    counter = iter(range(100))

    def handler(job):
        with lock:
            mine = next(counter)
        job.ctx.set("mine", mine)
        time.sleep(0.05)
        with lock:
            seen.append((mine, job.ctx.get("mine")))
        if mine % 2:
            raise ValueError(f"odd {mine}")

    worker.register("h", handler)
    template = wh.Job("h", timeout=5)
    executions = [worker.perform(template) for _ in range(4)]
    statuses = [e.wait(3) for e in executions]
    assert len(seen) == 4
    assert all(mine == read for mine, read in seen), seen
    # Each handle reports its own execution's error.
    assert sorted(statuses) == [200, 200, 500, 500]
    for execution, status in zip(executions, statuses, strict=True):
        if status == 500:
            assert isinstance(execution.error, ValueError)
        else:
            assert execution.error is None
        assert execution.job.ctx.status == status


def test_each_concurrent_async_execution_of_one_job_has_its_own_context(make_worker, run_async):
    async def handler(job):
        job.ctx.set("mine", id(asyncio.current_task()))
        await asyncio.sleep(0.02)
        assert job.ctx.get("mine") == id(asyncio.current_task())

    async def main():
        async with make_worker(concurrency=4) as worker:
            worker.register("h", handler)
            template = wh.Job("h")
            executions = [worker.perform(template) for _ in range(4)]
            return [await e for e in executions]

    assert run_async(main()) == [wh.Status.SUCCESS] * 4


def test_a_job_performed_again_after_it_ended_is_reused_not_copied(worker):
    worker.register("h", lambda job: job.ctx.set("n", job.ctx.get("n", 0) + 1))
    job = wh.Job("h")
    assert worker.perform(job, sync=True) is wh.Status.SUCCESS
    first = job.ctx
    assert worker.perform(job).wait(2) is wh.Status.SUCCESS
    assert job.ctx is not first  # a fresh Context per execution, on the caller's job
    assert job.ctx.get("n") == 1


# -- 4. far deadlines -------------------------------------------------------------------------


def test_a_time_centuries_away_does_not_run_nor_spin(worker):
    runs = []
    worker.register("h", lambda job: runs.append(1))
    schedule = worker.perform_at(wh.Job("h"), dt.datetime(9999, 1, 1))
    worker.perform_in(wh.Job("h"), 1e15)
    cpu = time.process_time()
    time.sleep(0.3)
    assert runs == []
    # A wrapped deadline made the timer thread spin on a full core.
    assert time.process_time() - cpu < 0.2
    assert schedule.cancel()


def test_an_interval_of_centuries_fires_once(worker, wait_until):
    runs = []
    worker.register("h", lambda job: runs.append(1))
    schedule = worker.perform_every(wh.Job("h"), 1e11)
    assert wait_until(lambda: runs)
    time.sleep(0.3)
    assert len(runs) == 1
    assert worker.stats()["scheduled"] == 1
    schedule.cancel()


# -- 5. NaN and infinities --------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda w, j: w.perform_in(j, NAN), id="perform_in-nan"),
        pytest.param(lambda w, j: w.perform_in(j, INF), id="perform_in-inf"),
        pytest.param(lambda w, j: w.perform_at(j, NAN), id="perform_at-nan"),
        pytest.param(lambda w, j: w.perform_at(j, INF), id="perform_at-inf"),
        pytest.param(lambda w, j: w.perform_every(j, NAN), id="every-nan"),
        pytest.param(lambda w, j: w.perform_every(j, INF), id="every-inf"),
        pytest.param(lambda w, j: w.stop(NAN), id="stop-nan"),
        pytest.param(lambda w, j: w.stop(-1), id="stop-negative"),
        pytest.param(lambda w, j: w.perform(j).wait(NAN), id="wait-nan"),
        pytest.param(lambda w, j: w.perform_in(j, 10).wait(NAN), id="schedule-wait-nan"),
        pytest.param(lambda w, j: wh.Job("h", timeout=NAN), id="job-timeout-nan"),
        pytest.param(lambda w, j: wh.Job("h", timeout=INF), id="job-timeout-inf"),
        pytest.param(lambda w, j: j.ctx.wait_cancelled(NAN), id="wait_cancelled-nan"),
        pytest.param(lambda w, j: wh.Channel(1).send(1, NAN), id="channel-send-nan"),
        pytest.param(lambda w, j: wh.Channel(1).recv(NAN), id="channel-recv-nan"),
    ],
)
def test_nan_and_senseless_infinities_are_value_errors(worker, call):
    worker.register("h", lambda job: None)
    with pytest.raises(ValueError):
        call(worker, wh.Job("h"))
    assert worker.perform(wh.Job("h")).wait(2) is wh.Status.SUCCESS or worker._stopped


def test_nan_reaching_the_core_directly_is_a_value_error():
    core = wh._core.Dispatcher(1)
    with pytest.raises(ValueError):
        core.wait_idle(NAN)
    with pytest.raises(ValueError):
        core.schedule_at(1, NAN, False)
    with pytest.raises(ValueError):
        core.take(False, 1, NAN)
    with pytest.raises(ValueError):
        wh._core.OnRamp(1, 0.0).next_slot(NAN)
    core.close()


def test_infinite_timeouts_where_they_mean_forever_are_refused_clearly(worker):
    # stop(inf) and wait(inf) would mean "no timeout": that is None, as in the stdlib.
    worker.register("h", lambda job: None)
    with pytest.raises(ValueError, match="None"):
        worker.perform(wh.Job("h")).wait(INF)
    assert math.isinf(INF)


# -- 6. stop() from inside a handler ----------------------------------------------------------


def test_stop_from_inside_a_handler_raises_instead_of_waiting_for_itself(make_worker):
    worker = make_worker(concurrency=2).start()
    raised: list[BaseException] = []

    def handler(job):
        try:
            worker.stop()
        except RuntimeError as exc:
            raised.append(exc)

    worker.register("h", handler)
    assert worker.perform(wh.Job("h")).wait(2) is wh.Status.SUCCESS
    assert worker.perform(wh.Job("h"), sync=True) is wh.Status.SUCCESS
    assert len(raised) == 2 and "inside" in str(raised[0])
    assert worker.stop(timeout=2)


def test_executor_shutdown_from_inside_a_call_raises_like_the_stdlib():
    pool = wh.Executor(max_workers=2)
    fut = pool.submit(lambda: pool.shutdown(wait=True))
    with pytest.raises(RuntimeError):
        fut.result(timeout=2)
    pool.shutdown(wait=True)


# -- 7. fork ----------------------------------------------------------------------------------


def _in_child(body) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = body()
        except BaseException:  # noqa: BLE001 - report through the exit code
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_worker_started_before_fork_raises_clearly_in_the_child(worker):
    worker.register("ok", lambda job: None)
    ticking = worker.perform_every(wh.Job("ok"), 0.01)

    def child() -> int:
        for use in (
            lambda: worker.perform(wh.Job("ok")),
            lambda: worker.perform(wh.Job("ok"), sync=True),
            lambda: worker.perform_in(wh.Job("ok"), 0.01),
            lambda: worker.perform_every(wh.Job("ok"), 0.01),
        ):
            try:
                use()
            except wh.WorkerStopped as exc:
                if "fork" not in str(exc):
                    return 2
            else:
                return 3
        assert worker.stop(timeout=1)  # nothing to wait for in the child: returns at once
        fresh = wh.Worker(concurrency=1)
        fresh.register("ok", lambda job: None)
        with fresh:
            return 0 if fresh.perform(wh.Job("ok")).wait(2) is wh.Status.SUCCESS else 4

    assert _in_child(child) == 0
    assert worker.perform(wh.Job("ok")).wait(2) is wh.Status.SUCCESS  # the parent's still works
    ticking.cancel()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_job_ids_stay_unique_across_fork(tmp_path):
    parent_ids = [wh.Job("h").id for _ in range(3)]
    out = tmp_path / "ids"

    def child() -> int:
        out.write_text("\n".join(wh.Job("h").id for _ in range(3)))
        return 0

    assert _in_child(child) == 0
    more = [wh.Job("h").id for _ in range(3)]
    child_ids = out.read_text().split("\n")
    assert len(set(parent_ids + more + child_ids)) == 9
    assert job_module._id_prefix.split("-")[0] == f"{os.getpid():x}"


# -- 8. Python objects built or dropped under the dispatcher lock -----------------------------


_LOCK_SCRIPT = r"""
import gc, sys, threading, time
import workhorse as wh

worker = wh.Worker(concurrency=2).start()


class Calls:
    # Collected while the core builds or drops Python objects: if that happened under the
    # dispatcher's lock, this __del__ (in the same thread, or one the GIL was handed to) would
    # wait for that lock forever.
    def __del__(self):
        worker.figures()
        worker.running


def garbage():
    for _ in range(50):
        cycle = [Calls()]
        cycle.append(cycle)


worker.register("h", lambda job: time.sleep(0.001))
channel = wh.Channel(10_000)
worker.perform_receive(wh.Job("h"), channel, sync=True)
gc.set_threshold(1)  # a collection on (nearly) every allocation, inside the core's calls too
end = time.monotonic() + 1.0
while time.monotonic() < end:
    garbage()
    worker.figures()
    worker.stats()
    for _ in range(20):
        channel.try_send(Calls())
garbage()
assert worker.stop(timeout=10)
gc.set_threshold(700)
print("ok")
"""


def test_figures_and_close_never_run_python_under_the_dispatcher_lock(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "lock.py"
    script.write_text(_LOCK_SCRIPT)
    try:
        out = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        pytest.fail("a call into the core deadlocked on the dispatcher lock")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# -- 9. items taken from a receive source before stop() ---------------------------------------


@pytest.mark.parametrize("kind", ["channel", "list", "queue.Queue"])
def test_items_taken_before_stop_are_run_or_handed_back(make_worker, run_async, kind):
    import queue

    items = list(range(20))
    handled: list[int] = []

    async def handler(job):
        await asyncio.sleep(0.05)
        handled.append(job.args["received_data"])

    if kind == "channel":
        source: object = wh.Channel(20)
        for i in items:
            source.send(i)  # type: ignore[attr-defined]
    elif kind == "queue.Queue":
        source = queue.Queue()
        for i in items:
            source.put(i)  # type: ignore[attr-defined]
    else:
        source = iter(items)

    async def main():
        worker = make_worker(concurrency=4)
        async with worker:
            worker.register("h", handler)
            worker.perform_receive(wh.Job("h"), source)
            await asyncio.sleep(0.12)  # some items handled, some taken and waiting
        return worker

    run_async(main())
    # Nothing taken from the source is dropped: each item was handled or is back in the source.
    if kind == "channel":
        source.close()  # type: ignore[attr-defined]
        left = []
        while True:
            try:
                left.append(source.recv(0))  # type: ignore[attr-defined]
            except wh.ChannelClosed:
                break
    elif kind == "queue.Queue":
        left = []
        while not source.empty():  # type: ignore[attr-defined]
            left.append(source.get_nowait())  # type: ignore[attr-defined]
    else:
        left = list(source)  # type: ignore[call-overload]
    assert sorted(handled + left) == items, (handled, left)
    assert handled, "nothing was handled at all"


# -- 10. ConcurrentJob after stop -------------------------------------------------------------


def test_concurrent_job_reports_no_running_workers_after_stop(make_concurrent_job):
    cj = make_concurrent_job(
        wh.Job("h"),
        perform_with=wh.PerformWith.EVERY_SYNC,
        every=0.01,
        max_workers=50,
        start_interval=0,
    )
    cj.register("h", lambda job: None)
    cj.start()
    assert poll_until(lambda: cj.running_workers >= 1)
    cj.stop(timeout=2)
    assert cj.running_workers == 0
    time.sleep(0.1)  # the ramp starts no worker after stop returned
    assert all(w._stopped for w in cj._workers.values())
    assert cj.running_workers == 0


def test_stop_does_not_wait_for_an_async_source_that_never_yields_again(make_worker, run_async):
    handled: list[int] = []

    async def forever():
        yield 1
        await asyncio.Event().wait()  # a stream that goes quiet for good
        yield 2  # pragma: no cover

    async def handler(job):
        handled.append(job.args["received_data"])

    async def main():
        worker = make_worker(concurrency=2)
        async with worker:
            worker.register("h", handler)
            schedule = worker.perform_receive(wh.Job("h"), forever())
            await asyncio.sleep(0.1)
        return schedule

    schedule = run_async(main(), timeout=3)
    assert handled == [1]
    assert schedule.done()


def test_cancelling_a_pumped_receive_runs_what_the_pump_took(worker, wait_until):
    import queue

    source: queue.Queue[int] = queue.Queue()
    for i in range(50):
        source.put(i)
    release = threading.Event()
    handled: list[int] = []

    def handler(job):
        release.wait(2)
        handled.append(job.args["received_data"])

    worker.register("h", handler)
    schedule = worker.perform_receive(wh.Job("h"), source)
    assert wait_until(lambda: worker.running == 4)
    assert schedule.cancel()
    release.set()
    assert schedule.wait(3)
    left = []
    while not source.empty():
        left.append(source.get_nowait())
    assert sorted(handled + left) == list(range(50))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"every": NAN, "perform_with": wh.PerformWith.EVERY_SYNC},
        {"every": INF, "perform_with": wh.PerformWith.EVERY_SYNC},
        {"start_interval": NAN, "perform_with": wh.PerformWith.SYNC},
        {"start_interval": INF, "perform_with": wh.PerformWith.SYNC},
    ],
)
def test_concurrent_job_refuses_nan_and_infinite_seconds(kwargs):
    with pytest.raises(ValueError):
        wh.ConcurrentJob(wh.Job("h"), max_workers=2, **kwargs)


# -- 11. step timings count from the start of the execution -----------------------------------


def test_the_first_step_is_timed_from_the_start_of_the_execution(worker):
    steps: list[tuple[str, float]] = []

    def handler(job):
        time.sleep(0.05)
        job.trace.mark("fetch")
        job.trace.mark("store")
        steps.extend(job.trace.steps)

    worker.register("h", handler)
    template = wh.Job("h")
    assert worker.perform(template, sync=True) is wh.Status.SUCCESS
    assert steps[0][0] == "fetch" and steps[0][1] >= 0.045
    assert steps[1][0] == "store" and steps[1][1] < 0.04
    steps.clear()
    assert worker.perform(template, sync=True) is wh.Status.SUCCESS  # a new trace per execution
    assert [name for name, _ in steps] == ["fetch", "store"]


def test_a_concurrent_job_stopped_from_its_own_handler_stops_every_worker(
    make_concurrent_job, wait_until
):
    cj = make_concurrent_job(
        wh.Job("h"), perform_with=wh.PerformWith.EVERY_SYNC, every=0.01, max_workers=3
    )
    runs = []

    def handler(job):
        runs.append(1)
        if len(runs) == 10:
            cj.stop()

    cj.register("h", handler)
    cj.start()
    assert wait_until(lambda: cj._stopped, timeout=3)
    assert wait_until(lambda: all(w._stopped and w.running == 0 for w in cj._workers.values()))
    settled = len(runs)
    time.sleep(0.1)
    assert len(runs) == settled
