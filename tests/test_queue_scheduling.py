"""When queued jobs run: scheduled and retry jobs start close to their due time on an idle worker
(the core sleeps until the nearest due time; no one-second polling), never early; and what
worker.drain() waits for. memory:// and redis://."""

from __future__ import annotations

import threading
import time

import pytest
from queue_fixtures import *  # noqa: F403
from queue_fixtures import info, settle

pytestmark = pytest.mark.timeout(30)


def test_a_job_enqueued_in_0_2_s_runs_between_0_2_and_1_s_later(queue, qworker, runs):
    worker = qworker()
    worker.register("later", runs.add)
    worker.start()
    time.sleep(0.05)  # the worker is idle, waiting
    enqueued = time.monotonic()
    queue.enqueue_in("later", 0.2, {"n": 1})
    assert runs.wait_for(1, 3)
    waited = runs.snapshot()[0]["mono"] - enqueued
    assert 0.2 - 0.01 <= waited <= 1.0, waited


def test_a_job_enqueued_at_a_time_runs_at_that_time(queue, qworker, runs):
    worker = qworker()
    worker.register("at", runs.add)
    worker.start()
    due = time.time() + 0.3
    queue.enqueue_at("at", due)
    assert runs.wait_for(1, 3)
    ran = runs.snapshot()[0]["at"]
    assert due - 0.02 <= ran <= due + 0.8, ran - due


def test_scheduled_jobs_start_within_a_fraction_of_a_second_of_due_on_an_idle_worker(
    queue, qworker, runs
):
    # The decision is "within 50 ms" (the core sleeps until the nearest due time, no polling);
    # asserted loosely: every one of six jobs, each enqueued while the worker idles, within 0.25 s.
    worker = qworker()
    worker.register("due", lambda job: runs.add(job, late=time.time() - job.args["due"]))
    worker.start()
    time.sleep(0.1)
    for i in range(6):
        due = time.time() + 0.15
        queue.enqueue_at("due", due, {"due": due})
        assert runs.wait_for(i + 1, 3)
        time.sleep(0.13 * (i % 3))  # enqueue at different phases of any polling period
    late = [round(r["late"], 3) for r in runs.snapshot()]
    assert all(-0.02 <= x <= 0.25 for x in late), late


def test_scheduled_jobs_due_at_different_times_each_run_at_their_own_time(queue, qworker, runs):
    worker = qworker(concurrency=4)
    worker.register("seq", runs.add)
    worker.start()
    time.sleep(0.05)
    start = time.monotonic()
    for delay in (0.9, 0.1, 0.5):
        queue.enqueue_in("seq", delay, {"d": delay})
    assert runs.wait_for(3, 4)
    seen = runs.snapshot()
    assert [r["args"]["d"] for r in seen] == [0.1, 0.5, 0.9]
    for r in seen:
        late = r["mono"] - start - r["args"]["d"]
        assert -0.02 <= late <= 0.35, (r["args"], late)


def test_a_scheduled_job_never_runs_early(queue, qworker, runs):
    worker = qworker()
    worker.register("later", runs.add)
    worker.start()
    queue.enqueue_in("later", 0.6)
    time.sleep(0.4)
    assert len(runs) == 0
    assert info(queue, "later").scheduled == 1
    assert runs.wait_for(1, 3)


def test_an_earlier_job_scheduled_after_a_later_one_is_not_held_up(queue, qworker, runs):
    # The worker sleeps until the nearest due time; a nearer one arriving must wake it.
    worker = qworker()
    worker.register("wake", runs.add)
    worker.start()
    queue.enqueue_in("wake", 20, {"which": "far"})
    time.sleep(0.1)
    enqueued = time.monotonic()
    queue.enqueue_in("wake", 0.1, {"which": "near"})
    assert runs.wait_for(1, 3)
    first = runs.snapshot()[0]
    assert first["args"] == {"which": "near"}
    assert first["mono"] - enqueued <= 1.0


def test_a_job_enqueued_by_another_handle_wakes_an_idle_worker(open_queue, qworker, runs):
    producer = open_queue()
    worker = qworker()
    worker.register("ping", runs.add)
    worker.start()
    time.sleep(0.2)
    sent = time.monotonic()
    producer.enqueue("ping")
    assert runs.wait_for(1, 3)
    assert runs.snapshot()[0]["mono"] - sent < 1.0


def test_a_retry_runs_soon_after_its_backoff_on_an_idle_worker(queue, qworker, runs):
    worker = qworker()

    @worker.handler("flaky", backoff=lambda job: 0.3)
    def flaky(job):
        runs.add(job)
        if job.fails == 0:
            raise RuntimeError("once")

    queue.enqueue("flaky")
    worker.start()
    assert runs.wait_for(2, 4)
    first, second = runs.snapshot()
    gap = second["mono"] - first["mono"]
    assert 0.3 - 0.01 <= gap <= 1.2, gap


def test_a_scheduled_job_due_while_no_worker_ran_runs_once_one_starts(queue, qworker, runs):
    queue.enqueue_in("missed", 0.1)
    time.sleep(0.3)
    worker = qworker()
    worker.register("missed", runs.add)
    started = time.monotonic()
    worker.start()
    assert runs.wait_for(1, 3)
    assert runs.snapshot()[0]["mono"] - started < 1.0


# -- drain -----------------------------------------------------------------------------------


def test_drain_returns_true_once_every_ready_job_has_run(queue, qworker, runs):
    worker = qworker(concurrency=4)

    @worker.handler("work")
    def work(job):
        time.sleep(0.01)
        runs.add(job)

    queue.enqueue_many([("work", {"i": i}) for i in range(30)])
    assert worker.drain(10) is True
    assert sorted(r["args"]["i"] for r in runs.snapshot()) == list(range(30))
    q = info(queue, "work")
    assert (q.ready, q.running) == (0, 0)


def test_drain_starts_the_worker_if_needed(queue, qworker, runs):
    worker = qworker()
    worker.register("work", runs.add)
    queue.enqueue("work")
    assert worker.drain(5) is True
    assert len(runs) == 1


def test_drain_waits_for_running_jobs_to_end(queue, qworker, runs):
    worker = qworker()

    @worker.handler("slow")
    def slow(job):
        time.sleep(0.3)
        runs.add(job)

    queue.enqueue("slow")
    worker.start()
    assert settle(lambda: info(queue, "slow").running == 1, 3)
    assert worker.drain(5) is True
    assert len(runs) == 1


def test_drain_does_not_wait_for_jobs_scheduled_later(queue, qworker, runs):
    worker = qworker()
    worker.register("later", runs.add)
    queue.enqueue_in("later", 60)
    started = time.monotonic()
    assert worker.drain(5) is True
    assert time.monotonic() - started < 1.0
    assert len(runs) == 0
    assert info(queue, "later").scheduled == 1


def test_drain_returns_false_on_timeout_while_a_job_runs(queue, qworker):
    release = threading.Event()
    worker = qworker()

    @worker.handler("stuck")
    def stuck(job):
        release.wait(10)

    queue.enqueue("stuck")
    try:
        started = time.monotonic()
        assert worker.drain(0.3) is False
        assert 0.25 <= time.monotonic() - started < 2.0
    finally:
        release.set()
    assert worker.drain(5) is True


def test_drain_returns_false_on_timeout_with_a_backlog_left(queue, qworker):
    # A backlog of 2 s of work on a single slot cannot drain in 0.3 s.
    worker = qworker(concurrency=1)

    @worker.handler("backlog")
    def backlog(job):
        time.sleep(0.05)

    queue.enqueue_many([("backlog", None)] * 40)
    assert worker.drain(0.3) is False
    assert info(queue, "backlog").ready > 0
