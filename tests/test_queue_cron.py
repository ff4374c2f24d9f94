"""worker.periodically_enqueue(spec, name, args): six-field cron (seconds first), one job per slot
however many workers (or processes) enqueue it, before or after start. memory:// and redis://."""

from __future__ import annotations

import collections
import time

import pytest
from queue_fixtures import *  # noqa: F403

import workhorse as wh

pytestmark = pytest.mark.timeout(30)


def slots_of(rows):
    """The cron slot (whole second) each run was enqueued for."""
    return [round(r["enqueued_at"]) for r in rows]


def test_a_cron_every_second_enqueues_a_job_each_second(queue, qworker, runs):
    worker = qworker()
    worker.register("report", lambda job: runs.add(job, enqueued_at=job.enqueued_at))
    worker.periodically_enqueue("*/1 * * * * *", "report")
    worker.start()
    assert runs.wait_for(3, 6)
    rows = runs.snapshot()
    slots = slots_of(rows)
    assert len(set(slots)) == len(slots), slots  # one job per slot
    assert slots[:3] == sorted(slots[:3])
    gaps = [b - a for a, b in zip(slots, slots[1:], strict=False)]
    assert all(g == 1 for g in gaps[:2]), slots
    # Each job runs close to its slot.
    for r in rows:
        assert r["at"] - round(r["enqueued_at"]) < 1.0


def test_periodic_jobs_carry_their_args(queue, qworker, runs):
    worker = qworker()
    worker.register("report", runs.add)
    worker.periodically_enqueue("* * * * * *", "report", args={"kind": "daily", "n": [1]})
    worker.start()
    assert runs.wait_for(1, 3)
    assert runs.snapshot()[0]["args"] == {"kind": "daily", "n": [1]}


def test_periodically_enqueue_after_start_works_too(queue, qworker, runs):
    worker = qworker()
    worker.register("report", runs.add)
    worker.start()
    worker.periodically_enqueue("* * * * * *", "report")
    assert runs.wait_for(1, 3)


def test_a_cron_job_is_enqueued_even_without_a_handler_here(open_queue, qworker, runs):
    # The enqueuing worker need not handle the name; another worker on the store runs it.
    enqueuer = qworker()
    enqueuer.register("unrelated", lambda job: None)
    enqueuer.periodically_enqueue("* * * * * *", "elsewhere")
    enqueuer.start()
    runner = wh.Worker(concurrency=1, queue=open_queue(), grace=1.0)
    runner.register("elsewhere", runs.add)
    try:
        runner.start()
        assert runs.wait_for(1, 3)
    finally:
        runner.stop(3)


def test_workers_enqueuing_the_same_cron_make_one_job_per_slot(open_queue, runs):
    workers = []
    for _ in range(3):
        w = wh.Worker(concurrency=2, queue=open_queue(), grace=1.0)
        w.register("report", lambda job: runs.add(job, enqueued_at=job.enqueued_at))
        w.periodically_enqueue("* * * * * *", "report")
        workers.append(w)
    try:
        for w in workers:
            w.start()
        time.sleep(3.3)
    finally:
        for w in workers:
            w.stop(3)
    slots = collections.Counter(slots_of(runs.snapshot()))
    assert 2 <= len(slots) <= 5, slots
    assert max(slots.values()) == 1, slots


def test_two_specs_on_one_worker_are_separate_schedules(queue, qworker, runs):
    worker = qworker()
    worker.register("a", runs.add)
    worker.register("b", runs.add)
    worker.periodically_enqueue("* * * * * *", "a")
    worker.periodically_enqueue("* * * * * *", "b")
    worker.start()
    assert runs.wait_for(2, 3)
    time.sleep(0.1)
    names = collections.Counter(r["name"] for r in runs.snapshot())
    assert names["a"] >= 1 and names["b"] >= 1, names


def test_periodic_enqueues_stop_with_the_worker(queue, qworker, runs):
    worker = qworker()
    worker.register("report", runs.add)
    worker.periodically_enqueue("* * * * * *", "report")
    worker.start()
    assert runs.wait_for(1, 3)
    worker.stop(3)
    time.sleep(0.1)
    q = [q for q in queue.client.queues() if q.name == "report"]
    ready_before = q[0].ready if q else 0
    time.sleep(1.5)
    q = [q for q in queue.client.queues() if q.name == "report"]
    assert (q[0].ready if q else 0) == ready_before


def test_a_cron_that_fires_rarely_enqueues_nothing_soon(queue, qworker, runs):
    worker = qworker()
    worker.register("yearly", runs.add)
    worker.periodically_enqueue("0 0 0 1 1 *", "yearly")
    worker.start()
    time.sleep(1.2)
    assert len(runs) == 0
