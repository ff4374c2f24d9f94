"""ConcurrentJob: one job on up to max_workers workers, on-ramped one every start_interval."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections import defaultdict

import pytest

import workhorse as wh

pytestmark = pytest.mark.timeout(10)

P = wh.PerformWith
ALL_MODES = list(P)


def mode_kwargs(mode, *, every=0.01, source=None):
    """The extra arguments each perform_with mode needs."""
    if mode in (P.EVERY_SYNC, P.EVERY_ASYNC):
        return {"every": every}
    if mode in (P.RECEIVE_SYNC, P.RECEIVE_ASYNC):
        return {"source": source if source is not None else range(1000)}
    return {}


class SlotTracker:
    """Runs in flight per worker_number and overall, and every worker_number seen."""

    def __init__(self):
        self.lock = threading.Lock()
        self.active = defaultdict(int)
        self.max_active = defaultdict(int)
        self.total_active = 0
        self.max_total = 0
        self.numbers = []
        self.items = []

    def enter(self, job):
        number = job.ctx.get("worker_number")
        with self.lock:
            self.numbers.append(number)
            self.items.append(job.args.get("received_data"))
            self.active[number] += 1
            self.max_active[number] = max(self.max_active[number], self.active[number])
            self.total_active += 1
            self.max_total = max(self.max_total, self.total_active)
        return number

    def leave(self, number):
        with self.lock:
            self.active[number] -= 1
            self.total_active -= 1

    def handler(self, seconds):
        def run(job):
            number = self.enter(job)
            try:
                time.sleep(seconds)
            finally:
                self.leave(number)

        return run

    @property
    def runs(self):
        with self.lock:
            return len(self.numbers)


@pytest.fixture
def slots():
    return SlotTracker()


# -- the six modes -------------------------------------------------------------------------------


def test_sync_mode_reruns_the_job_as_each_run_ends(make_concurrent_job, slots, wait_until):
    cj = make_concurrent_job(wh.Job("h"), perform_with=P.SYNC, max_workers=2, start_interval=0.01)
    cj.register("h", slots.handler(0.005))
    cj.start()
    assert wait_until(lambda: slots.runs >= 6), "ended slots were not refilled"
    assert slots.max_total <= 2


def test_async_mode_reruns_the_job_as_each_run_ends(make_concurrent_job, slots, wait_until):
    cj = make_concurrent_job(wh.Job("h"), perform_with=P.ASYNC, max_workers=2, start_interval=0.01)
    cj.register("h", slots.handler(0.005))
    cj.start()
    assert wait_until(lambda: slots.runs >= 6)
    assert slots.max_total <= 2


def test_every_sync_mode_never_overlaps_within_a_worker(make_concurrent_job, slots, wait_until):
    cj = make_concurrent_job(
        wh.Job("h"), perform_with=P.EVERY_SYNC, every=0.005, max_workers=2, start_interval=0.01
    )
    cj.register("h", slots.handler(0.02))
    cj.start()
    assert wait_until(lambda: cj.running_workers == 2 and slots.runs >= 8)
    cj.stop(timeout=2)
    assert max(slots.max_active.values()) == 1
    assert slots.max_total <= 2


def test_every_async_mode_overlaps_within_a_worker(make_concurrent_job, slots, wait_until):
    cj = make_concurrent_job(
        wh.Job("h"), perform_with=P.EVERY_ASYNC, every=0.005, max_workers=2, start_interval=0.01
    )
    cj.register("h", slots.handler(0.03))
    cj.start()
    assert wait_until(lambda: slots.runs >= 12)
    cj.stop(timeout=2)
    assert max(slots.max_active.values()) >= 2


@pytest.mark.parametrize("mode", [P.RECEIVE_SYNC, P.RECEIVE_ASYNC])
@pytest.mark.parametrize("source_kind", ["range", "channel"])
def test_receive_modes_handle_each_item_exactly_once(
    make_concurrent_job, slots, wait_until, mode, source_kind
):
    items = list(range(60))
    source = wh.Channel(4) if source_kind == "channel" else range(60)
    cj = make_concurrent_job(
        wh.Job("h"), perform_with=mode, source=source, max_workers=3, start_interval=0.005
    )
    cj.register("h", slots.handler(0.002))
    cj.start()
    if source_kind == "channel":
        for item in items:
            source.send(item, timeout=2)
        source.close()
    assert wait_until(lambda: slots.runs >= 60)
    time.sleep(0.02)  # a duplicate delivery would show up now
    assert sorted(slots.items) == items


def test_receive_sync_mode_runs_one_item_at_a_time_per_worker(
    make_concurrent_job, slots, wait_until
):
    cj = make_concurrent_job(
        wh.Job("h"),
        perform_with=P.RECEIVE_SYNC,
        source=range(40),
        max_workers=3,
        start_interval=0.005,
    )
    cj.register("h", slots.handler(0.005))
    cj.start()
    assert wait_until(lambda: slots.runs == 40)
    assert max(slots.max_active.values()) == 1
    assert slots.max_total <= 3


def test_receive_modes_stop_refilling_once_the_source_is_exhausted(
    make_concurrent_job, slots, wait_until
):
    cj = make_concurrent_job(
        wh.Job("h"),
        perform_with=P.RECEIVE_SYNC,
        source=range(5),
        max_workers=2,
        start_interval=0.005,
    )
    cj.register("h", slots.handler(0.001))
    cj.start()
    assert wait_until(lambda: slots.runs == 5)
    assert wait_until(lambda: cj.running_workers == 0)
    time.sleep(0.03)
    assert cj.running_workers == 0


def test_async_handler_in_every_async_mode(make_concurrent_job, wait_until):
    runs = []

    async def handler(job):
        await asyncio.sleep(0.001)
        runs.append(job.ctx.get("worker_number"))

    cj = make_concurrent_job(
        wh.Job("h"), perform_with=P.EVERY_ASYNC, every=0.01, max_workers=2, start_interval=0.01
    )
    cj.register("h", handler)
    cj.start()
    assert wait_until(lambda: {1, 2} <= set(runs))


# -- worker_number -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ALL_MODES, ids=[m.name for m in ALL_MODES])
def test_each_workers_context_carries_its_1_based_worker_number(
    make_concurrent_job, slots, wait_until, mode
):
    # Runs last longer than start_interval, so every slot gets filled.
    cj = make_concurrent_job(
        wh.Job("h"), perform_with=mode, max_workers=3, start_interval=0.01, **mode_kwargs(mode)
    )
    cj.register("h", slots.handler(0.04))
    cj.start()
    assert wait_until(lambda: len(set(slots.numbers)) >= 3, timeout=3)
    assert set(slots.numbers) == {1, 2, 3}


def test_worker_number_is_not_written_into_the_callers_job(make_concurrent_job, slots, wait_until):
    job = wh.Job("h")
    cj = make_concurrent_job(job, perform_with=P.SYNC, max_workers=1)
    cj.register("h", slots.handler(0.001))
    cj.start()
    assert wait_until(lambda: slots.runs >= 1)
    assert job.ctx.get("worker_number") is None


# -- max_workers and on-ramping ------------------------------------------------------------------


@pytest.mark.parametrize("mode", [P.SYNC, P.ASYNC, P.EVERY_SYNC, P.RECEIVE_SYNC])
def test_never_more_runs_than_max_workers(make_concurrent_job, slots, wait_until, mode):
    cj = make_concurrent_job(
        wh.Job("h"), perform_with=mode, max_workers=2, **mode_kwargs(mode, every=0.002)
    )
    cj.register("h", slots.handler(0.01))
    cj.start()
    assert wait_until(lambda: slots.runs >= 10)
    assert slots.max_total <= 2


def test_on_ramping_adds_one_worker_per_start_interval(make_concurrent_job):
    interval, max_workers = 0.05, 4
    cj = make_concurrent_job(
        wh.Job("h"),
        perform_with=P.EVERY_ASYNC,
        every=0.01,
        max_workers=max_workers,
        start_interval=interval,
    )
    cj.register("h", lambda job: None)
    samples = []
    start = time.monotonic()
    cj.start()
    deadline = start + 3.0
    while time.monotonic() < deadline:
        running = cj.running_workers
        elapsed = time.monotonic() - start
        samples.append((elapsed, running))
        if running == max_workers:
            break
        time.sleep(0.003)
    counts = [n for _, n in samples]
    assert counts[-1] == max_workers, samples
    assert counts == sorted(counts), "running_workers went down while ramping"
    for elapsed, running in samples:
        # Slot 1 at start, then one per tick at start + k * interval: never ahead of the clock.
        assert running <= 1 + int(elapsed / interval), (elapsed, running, samples)
    reached = next(elapsed for elapsed, n in samples if n == max_workers)
    assert reached >= (max_workers - 1) * interval


def test_an_ended_slot_is_refilled_at_the_next_tick_not_at_once(make_concurrent_job, wait_until):
    interval = 0.04
    starts = []
    cj = make_concurrent_job(
        wh.Job("h"), perform_with=P.SYNC, max_workers=1, start_interval=interval
    )
    cj.register("h", lambda job: starts.append(time.monotonic()))
    begin = time.monotonic()
    cj.start()
    assert wait_until(lambda: len(starts) >= 4)
    # At most one fill per tick (start + k * interval): run k cannot start before tick k.
    for k, started in enumerate(starts[:4]):
        assert started - begin >= k * interval, (k, [s - begin for s in starts])


def test_start_interval_zero_fills_every_slot_at_once(make_concurrent_job, wait_until):
    cj = make_concurrent_job(
        wh.Job("h"), perform_with=P.EVERY_ASYNC, every=0.05, max_workers=5, start_interval=0
    )
    cj.register("h", lambda job: None)
    start = time.monotonic()
    cj.start()
    assert wait_until(lambda: cj.running_workers == 5, timeout=2)
    assert time.monotonic() - start < 1.0


def test_start_returns_at_once(make_concurrent_job):
    cj = make_concurrent_job(wh.Job("h"), perform_with=P.SYNC, max_workers=3, start_interval=10.0)
    cj.register("h", lambda job: time.sleep(0.5))
    start = time.monotonic()
    assert cj.start() is cj
    assert time.monotonic() - start < 0.2


def test_running_workers_is_zero_before_start(make_concurrent_job):
    cj = make_concurrent_job(wh.Job("h"), perform_with=P.SYNC, max_workers=2)
    cj.register("h", lambda job: None)
    assert cj.running_workers == 0


# -- lifecycle and configuration -----------------------------------------------------------------


def test_stop_ends_every_worker(make_concurrent_job, slots, wait_until):
    cj = make_concurrent_job(
        wh.Job("h"), perform_with=P.EVERY_SYNC, every=0.005, max_workers=2, start_interval=0.005
    )
    cj.register("h", slots.handler(0.001))
    cj.start()
    assert wait_until(lambda: cj.running_workers == 2 and slots.runs >= 4)
    cj.stop(timeout=2)
    count = slots.runs
    time.sleep(0.05)
    assert slots.runs == count


@pytest.mark.parametrize(
    "mode",
    [
        P.SYNC,
        P.ASYNC,
    ],
)
def test_stop_cancels_running_jobs_and_waits_for_them(make_concurrent_job, mode):
    started, ended = threading.Event(), []

    def patient(job):
        started.set()
        cancelled = job.ctx.wait_cancelled(3)
        time.sleep(0.05)  # wrapping up after the cancel: stop() must wait for this
        ended.append(cancelled)

    cj = make_concurrent_job(wh.Job("h"), perform_with=mode, max_workers=1)
    cj.register("h", patient)
    cj.start()
    assert started.wait(2)
    start = time.monotonic()
    cj.stop(timeout=2)
    assert ended == [True]
    assert time.monotonic() - start < 1.0


def test_context_manager_starts_and_stops(make_concurrent_job, slots, wait_until):
    cj = make_concurrent_job(wh.Job("h"), perform_with=P.EVERY_SYNC, every=0.005, max_workers=1)
    cj.register("h", slots.handler(0.001))
    with cj as started:
        assert started is cj
        assert wait_until(lambda: slots.runs >= 2)
    count = slots.runs
    time.sleep(0.03)
    assert slots.runs == count


def test_a_stopped_concurrent_job_cannot_restart(make_concurrent_job):
    cj = make_concurrent_job(wh.Job("h"), perform_with=P.SYNC, max_workers=1)
    cj.register("h", lambda job: None)
    cj.start()
    cj.stop(timeout=1)
    with pytest.raises(RuntimeError):
        cj.start()


def test_worker_factory_builds_the_worker_of_each_slot(make_concurrent_job, wait_until):
    built = []
    seen = []

    def tag(slot):
        def adapter(next_handler):
            def handler(job):
                seen.append((slot, job.ctx.get("worker_number")))
                return next_handler(job)

            return handler

        return adapter

    def factory(slot):
        built.append(slot)
        worker = wh.Worker(concurrency=2, adapters=[tag(slot)])
        worker.register("h", lambda job: None)
        return worker

    cj = make_concurrent_job(
        wh.Job("h"),
        perform_with=P.EVERY_SYNC,
        every=0.01,
        max_workers=2,
        start_interval=0.01,
        worker_factory=factory,
    )
    cj.start()
    assert wait_until(lambda: {1, 2} <= {slot for slot, _ in seen})
    assert sorted(built) == [1, 2]
    assert all(slot == number for slot, number in seen)


def test_adapters_are_applied_on_every_worker(make_concurrent_job, wait_until):
    wrapped = []

    def adapter(next_handler):
        def handler(job):
            wrapped.append(job.ctx.get("worker_number"))
            return next_handler(job)

        return handler

    cj = make_concurrent_job(
        wh.Job("h"),
        perform_with=P.EVERY_SYNC,
        every=0.01,
        max_workers=2,
        start_interval=0.01,
        adapters=[adapter],
    )
    cj.register("h", lambda job: None)
    cj.start()
    assert wait_until(lambda: {1, 2} <= set(wrapped))


def test_each_worker_runs_a_copy_of_the_job(make_concurrent_job, wait_until):
    jobs = []
    original = wh.Job("h", {"list": [1]})
    cj = make_concurrent_job(original, perform_with=P.SYNC, max_workers=1)

    def handler(job):
        job.args["list"].append(2)
        jobs.append(job)

    cj.register("h", handler)
    cj.start()
    assert wait_until(lambda: len(jobs) >= 2)
    assert original.args == {"list": [1]}
    assert all(j is not original for j in jobs)


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="needs SIGTERM")
def test_run_blocks_until_sigterm_then_stops(make_concurrent_job, wait_until):
    running = threading.Event()
    cj = make_concurrent_job(wh.Job("h"), perform_with=P.EVERY_SYNC, every=0.01, max_workers=1)
    cj.register("h", lambda job: running.set())
    before = signal.getsignal(signal.SIGTERM)

    def terminate():
        # Once the job runs, run() has installed its handlers and started.
        if running.wait(3):
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate, daemon=True).start()
    start = time.monotonic()
    cj.run()
    assert running.is_set()
    assert time.monotonic() - start < 3.0
    assert signal.getsignal(signal.SIGTERM) is before
    with pytest.raises(RuntimeError):
        cj.start()


@pytest.mark.parametrize("mode", [P.SYNC, P.ASYNC])
def test_runs_shorter_than_start_interval_still_ramp_to_max_workers(
    make_concurrent_job, wait_until, mode
):
    seen: set[int] = set()
    cj = make_concurrent_job(wh.Job("h"), perform_with=mode, max_workers=3, start_interval=0.02)
    cj.register("h", lambda job: seen.add(job.ctx.get("worker_number")))
    cj.start()
    assert wait_until(lambda: seen == {1, 2, 3}, timeout=3), seen


@pytest.mark.parametrize("mode", [P.SYNC, P.ASYNC])
def test_short_cpu_bound_runs_still_ramp_one_slot_per_start_interval(make_concurrent_job, mode):
    # Each run holds the GIL for half an interval, so refilling every reached slot at a tick
    # takes the control thread longer than the interval: slots not yet reached must still come
    # up at their own tick (slot k at start + (k - 1) * interval), not wait behind the refills.
    interval, max_workers = 0.02, 10
    first_run: dict[int, float] = {}

    def burn(job):
        first_run.setdefault(job.ctx.get("worker_number"), time.monotonic())
        end = time.perf_counter() + interval / 2
        while time.perf_counter() < end:
            pass

    cj = make_concurrent_job(
        wh.Job("h"), perform_with=mode, max_workers=max_workers, start_interval=interval
    )
    cj.register("h", burn)
    start = time.monotonic()
    cj.start()
    while len(first_run) < max_workers and time.monotonic() - start < 2.0:
        time.sleep(0.01)
    cj.stop(timeout=2)
    late = {n: round((t - start) / interval, 1) for n, t in sorted(first_run.items())}
    assert sorted(late) == list(range(1, max_workers + 1)), f"first runs, in intervals: {late}"
    # Documented: slot 10 at 9 intervals; allow for a busy machine, not for a stalled ramp.
    assert max(late.values()) < 3 * (max_workers - 1), f"first runs, in intervals: {late}"
