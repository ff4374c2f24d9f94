"""perform_at / perform_in / perform_every (sync and async), Schedule handles and cancel()."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time

import pytest

import workhorse as wh

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
def stamp(worker):
    """A registered handler 'stamp' that records time.monotonic() of each run."""
    runs: list[float] = []
    worker.register("stamp", lambda job: runs.append(time.monotonic()))
    return runs


# -- perform_in ----------------------------------------------------------------------------------


def test_perform_in_runs_once_after_the_delay(worker, stamp):
    start = time.monotonic()
    schedule = worker.perform_in(wh.Job("stamp"), 0.05)
    assert isinstance(schedule, wh.Schedule)
    assert schedule.wait(2)
    assert len(stamp) == 1
    assert 0.045 <= stamp[0] - start < 1.0
    assert schedule.execution.status is wh.Status.SUCCESS


def test_perform_in_does_not_run_before_the_delay(worker, stamp):
    schedule = worker.perform_in(wh.Job("stamp"), 0.2)
    time.sleep(0.05)
    assert stamp == []
    assert not schedule.done()
    assert schedule.wait(2)
    assert len(stamp) == 1


def test_perform_in_zero_runs_at_once(worker, stamp):
    start = time.monotonic()
    assert worker.perform_in(wh.Job("stamp"), 0).wait(2)
    assert stamp[0] - start < 0.5


def test_perform_in_accepts_a_timedelta(worker, stamp):
    start = time.monotonic()
    assert worker.perform_in(wh.Job("stamp"), dt.timedelta(milliseconds=30)).wait(2)
    assert 0.025 <= stamp[0] - start < 1.0


def test_timers_fire_in_deadline_order(worker):
    order = []
    worker.register("mark", lambda job: order.append(job.args["n"]))
    schedules = [worker.perform_in(wh.Job("mark", {"n": n}), n / 1000) for n in (60, 10, 35)]
    assert all(s.wait(2) for s in schedules)
    assert order == [10, 35, 60]


def test_many_timers_each_fire_exactly_once(make_worker, wait_until):
    worker = make_worker(concurrency=8).start()
    seen = []
    lock = threading.Lock()

    def mark(job):
        with lock:
            seen.append(job.args["n"])

    worker.register("mark", mark)
    schedules = [worker.perform_in(wh.Job("mark", {"n": n}), (n % 20) / 1000) for n in range(300)]
    assert all(s.wait(2) for s in schedules)
    assert sorted(seen) == list(range(300))


def test_perform_in_execution_reports_the_handler_error(worker):
    def fail(job):
        raise RuntimeError("timer boom")

    worker.register("fail", fail)
    schedule = worker.perform_in(wh.Job("fail"), 0.01)
    assert schedule.execution.wait(2) is wh.Status.INTERNAL_ERROR
    assert "timer boom" in str(schedule.execution.error)


# -- perform_at ----------------------------------------------------------------------------------


def test_perform_at_epoch_seconds(worker, stamp):
    start = time.monotonic()
    assert worker.perform_at(wh.Job("stamp"), time.time() + 0.05).wait(2)
    assert 0.04 <= stamp[0] - start < 1.0


def test_perform_at_naive_datetime_is_local_time(worker, stamp):
    start = time.monotonic()
    when = dt.datetime.now() + dt.timedelta(milliseconds=50)
    assert worker.perform_at(wh.Job("stamp"), when).wait(2)
    assert 0.04 <= stamp[0] - start < 1.0


def test_perform_at_aware_datetime(worker, stamp):
    start = time.monotonic()
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(milliseconds=50)
    assert worker.perform_at(wh.Job("stamp"), when).wait(2)
    assert 0.04 <= stamp[0] - start < 1.0


@pytest.mark.parametrize("past", [-3600.0, -0.001, 0.0])
def test_perform_at_in_the_past_runs_at_once(worker, stamp, past):
    start = time.monotonic()
    assert worker.perform_at(wh.Job("stamp"), time.time() + past).wait(2)
    assert stamp[0] - start < 0.5


# -- cancel one-shots ----------------------------------------------------------------------------


def test_cancelled_timer_never_runs(worker, stamp):
    schedule = worker.perform_in(wh.Job("stamp"), 0.03)
    assert schedule.cancel() is True
    assert schedule.cancelled
    assert schedule.done()
    time.sleep(0.08)
    assert stamp == []


def test_cancel_twice_returns_false_the_second_time(worker, stamp):
    schedule = worker.perform_in(wh.Job("stamp"), 5)
    assert schedule.cancel() is True
    assert schedule.cancel() is False


def test_cancel_after_the_timer_ran_returns_false(worker, stamp):
    schedule = worker.perform_in(wh.Job("stamp"), 0)
    assert schedule.wait(2)
    assert schedule.cancel() is False
    assert len(stamp) == 1


def test_cancelling_one_timer_leaves_the_others(worker):
    ran = []
    worker.register("mark", lambda job: ran.append(job.args["n"]))
    keep = worker.perform_in(wh.Job("mark", {"n": 1}), 0.02)
    drop = worker.perform_in(wh.Job("mark", {"n": 2}), 0.02)
    drop.cancel()
    assert keep.wait(2)
    time.sleep(0.03)
    assert ran == [1]


# -- perform_every -------------------------------------------------------------------------------


@pytest.mark.parametrize("sync", [False, True])
def test_every_runs_first_at_once(worker, stamp, sync, wait_until):
    start = time.monotonic()
    schedule = worker.perform_every(wh.Job("stamp"), 10.0, sync=sync)
    try:
        assert wait_until(lambda: stamp, timeout=1.0)
        assert stamp[0] - start < 0.5
    finally:
        schedule.cancel()


@pytest.mark.parametrize("sync", [False, True])
def test_every_10ms_over_200ms_fires_10_to_30_times(worker, stamp, sync):
    schedule = worker.perform_every(wh.Job("stamp"), 0.01, sync=sync)
    time.sleep(0.2)
    schedule.cancel()
    assert schedule.wait(2)
    assert 10 <= len(stamp) <= 30


def test_every_accepts_a_timedelta(worker, stamp, wait_until):
    schedule = worker.perform_every(wh.Job("stamp"), dt.timedelta(milliseconds=10))
    assert wait_until(lambda: len(stamp) >= 3, timeout=2.0)
    schedule.cancel()


def test_every_is_fixed_rate_so_due_times_are_whole_intervals_apart(worker, wait_until):
    due: list[float] = []

    def slowish(job):
        due.append(job.ctx.scheduled_at)
        time.sleep(0.004)  # a drifting clock would add this to every period

    worker.register("slowish", slowish)
    interval = 0.015
    schedule = worker.perform_every(wh.Job("slowish"), interval, sync=True)
    assert wait_until(lambda: len(due) >= 8, timeout=3.0)
    schedule.cancel()
    schedule.wait(2)
    steps = [(t - due[0]) / interval for t in due]
    assert all(abs(s - round(s)) < 1e-3 for s in steps), steps
    assert [round(s) for s in steps] == sorted({round(s) for s in steps})


def test_every_sync_skips_ticks_while_running(worker, tracker):
    def slow(job):
        with tracker.running():
            tracker.add(job.ctx.scheduled_at)
            time.sleep(0.035)

    worker.register("slow", slow)
    schedule = worker.perform_every(wh.Job("slow"), 0.01, sync=True)
    time.sleep(0.3)
    schedule.cancel()
    assert schedule.wait(2)
    assert tracker.max_active == 1
    assert 3 <= tracker.count <= 9
    # Each run is due on a tick after the previous run ended: the 3 ticks that fell during a
    # 35 ms run were dropped, not queued to run next.
    due = tracker.snapshot()
    gaps = [b - a for a, b in zip(due, due[1:], strict=False)]
    assert min(gaps) >= 0.035, gaps
    assert worker.figures()["interval_skipped_ticks_total"] >= 3


def test_every_sync_does_not_catch_up_on_skipped_ticks(worker, wait_until):
    due: list[float] = []

    def first_is_slow(job):
        due.append(job.ctx.scheduled_at)
        if len(due) == 1:
            time.sleep(0.1)

    worker.register("h", first_is_slow)
    schedule = worker.perform_every(wh.Job("h"), 0.01, sync=True)
    assert wait_until(lambda: len(due) >= 3, timeout=2.0)
    schedule.cancel()
    # Ticks at 10..90 ms fell during the slow first run: the next run is due at >= 100 ms,
    # and the ones after it keep the 10 ms pace instead of bursting through the backlog.
    assert due[1] - due[0] >= 0.095
    assert due[2] - due[1] >= 0.0095


@pytest.mark.parametrize("handler_kind", ["plain", "async"])
def test_every_async_fires_on_every_tick_even_while_runs_are_going(
    make_worker, tracker, handler_kind
):
    worker = make_worker(concurrency=10).start()

    def plain(job):
        with tracker.running():
            tracker.add()
            time.sleep(0.05)

    async def coro(job):
        with tracker.running():
            tracker.add()
            await asyncio.sleep(0.05)

    worker.register("slow", plain if handler_kind == "plain" else coro)
    schedule = worker.perform_every(wh.Job("slow"), 0.01, sync=False)
    time.sleep(0.2)
    schedule.cancel()
    assert schedule.wait(2)
    assert tracker.max_active >= 3
    assert 10 <= tracker.count <= 30


@pytest.mark.parametrize("handler_kind", ["plain", "async"])
def test_every_sync_never_overlaps_for_either_handler_kind(
    worker, tracker, handler_kind, wait_until
):
    def plain(job):
        with tracker.running():
            tracker.add()
            time.sleep(0.02)

    async def coro(job):
        with tracker.running():
            tracker.add()
            await asyncio.sleep(0.02)

    worker.register("slow", plain if handler_kind == "plain" else coro)
    schedule = worker.perform_every(wh.Job("slow"), 0.005, sync=True)
    assert wait_until(lambda: tracker.count >= 5, timeout=2.0)
    schedule.cancel()
    assert schedule.wait(2)
    assert tracker.max_active == 1


def test_every_runs_each_tick_on_the_job_itself_with_a_fresh_context(worker, wait_until):
    # go-work's PerformEvery performs the same job on every tick, each with a new Context (a
    # receive schedule copies the job per item instead: it carries the item in its args).
    runs: list[tuple[wh.Job, wh.Context]] = []
    worker.register("h", lambda job: runs.append((job, job.ctx)))
    original = wh.Job("h", {"k": [1]})
    schedule = worker.perform_every(original, 0.01, sync=True)
    assert wait_until(lambda: len(runs) >= 3, timeout=2.0)
    schedule.cancel()
    schedule.wait(2)
    assert all(job is original for job, _ctx in runs)
    assert len({id(ctx) for _job, ctx in runs}) == len(runs)


def test_overlapping_async_ticks_each_get_their_own_context(worker, wait_until):
    contexts: list[wh.Context] = []
    gate = threading.Event()

    def slow(job: wh.Job) -> None:
        contexts.append(job.ctx)
        gate.wait(1.0)  # still running when the next ticks fire

    worker.register("slow", slow)
    schedule = worker.perform_every(wh.Job("slow"), 0.01)
    assert wait_until(lambda: len(contexts) >= 3, timeout=2.0)
    gate.set()
    schedule.cancel()
    schedule.wait(2)
    assert len({id(ctx) for ctx in contexts}) == len(contexts)


def test_every_handler_that_raises_keeps_ticking(worker, tracker, wait_until):
    def fail(job):
        tracker.add()
        raise RuntimeError("tick failed")

    worker.register("fail", fail)
    schedule = worker.perform_every(wh.Job("fail"), 0.01, sync=True)
    assert wait_until(lambda: worker.stats()["by_status"].get(500, 0) >= 5, timeout=2.0)
    schedule.cancel()
    assert schedule.wait(2)


# -- cancel every --------------------------------------------------------------------------------


def test_cancelled_every_stops_ticking(worker, stamp, wait_until):
    schedule = worker.perform_every(wh.Job("stamp"), 0.01)
    assert wait_until(lambda: len(stamp) >= 2, timeout=2.0)
    assert schedule.cancel() is True
    assert schedule.wait(2)
    count = len(stamp)
    time.sleep(0.05)
    assert len(stamp) == count
    assert schedule.cancel() is False


def test_cancel_every_lets_the_running_execution_finish(worker):
    started, finished = threading.Event(), []

    def slow(job):
        started.set()
        time.sleep(0.05)
        finished.append(job.ctx.cancelled)

    worker.register("slow", slow)
    schedule = worker.perform_every(wh.Job("slow"), 10.0, sync=True)
    assert started.wait(2)
    schedule.cancel()
    assert not schedule.done(), "done() before the running execution finished"
    assert schedule.wait(2)
    assert finished == [False]
    assert worker.stats()["by_status"] == {200: 1}


def test_every_schedule_counts_as_scheduled_until_cancelled(worker, stamp, wait_until):
    schedule = worker.perform_every(wh.Job("stamp"), 0.01)
    assert worker.stats()["scheduled"] == 1
    schedule.cancel()
    schedule.wait(2)
    assert wait_until(lambda: worker.stats()["scheduled"] == 0)


def test_stop_ends_every_schedules(make_worker):
    worker = make_worker().start()
    worker.register("ok", lambda job: None)
    schedule = worker.perform_every(wh.Job("ok"), 0.01)
    time.sleep(0.02)
    assert worker.stop(timeout=2)
    assert schedule.wait(1)
