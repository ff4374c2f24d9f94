"""Unique jobs (gocraft's rule): unique while waiting. The key is taken at enqueue and released
when the job is claimed or deleted; while it is held enqueue_unique returns None."""

from __future__ import annotations

import threading

import pytest
from queue_fixtures import *  # noqa: F403
from queue_fixtures import info, settle

import workhorse as wh

pytestmark = pytest.mark.timeout(30)


def test_enqueue_unique_returns_none_while_an_equal_job_waits(queue):
    first = queue.enqueue_unique("sync_user", {"id": 7})
    assert isinstance(first, wh.QueuedJob)
    assert first.args == {"id": 7}
    assert queue.enqueue_unique("sync_user", {"id": 7}) is None
    assert queue.enqueue_unique("sync_user", {"id": 7}) is None
    assert info(queue, "sync_user").ready == 1


def test_equal_args_in_another_key_order_are_the_same_job(queue):
    assert queue.enqueue_unique("sync", {"a": 1, "b": [1, 2]}) is not None
    assert queue.enqueue_unique("sync", {"b": [1, 2], "a": 1}) is None


def test_other_args_or_another_name_are_another_job(queue):
    assert queue.enqueue_unique("sync", {"id": 7}) is not None
    assert queue.enqueue_unique("sync", {"id": 8}) is not None
    assert queue.enqueue_unique("sync", {"id": 7, "x": None}) is not None
    assert queue.enqueue_unique("sync", {"id": [7]}) is not None
    assert queue.enqueue_unique("other", {"id": 7}) is not None
    assert queue.enqueue_unique("sync", None) is not None
    assert queue.enqueue_unique("sync", {}) is None  # None is {}
    assert info(queue, "sync").ready == 5
    assert info(queue, "other").ready == 1


def test_uniqueness_holds_across_handles_on_one_store(open_queue):
    one, two = open_queue(), open_queue()
    assert one.enqueue_unique("sync", {"id": 1}) is not None
    assert two.enqueue_unique("sync", {"id": 1}) is None


def test_a_unique_job_can_be_enqueued_again_once_the_waiting_one_is_claimed(
    queue, qworker, runs
):
    started = threading.Event()
    release = threading.Event()
    worker = qworker()

    @worker.handler("sync")
    def sync(job):
        runs.add(job)
        started.set()
        release.wait(5)

    first = queue.enqueue_unique("sync", {"id": 7})
    assert first is not None
    worker.start()
    try:
        assert started.wait(5)
        queue.client.pause("sync")  # so that the next one waits instead of being claimed too
        # The first one runs now: no equal job waits, so a new one is accepted ...
        second = settle(lambda: queue.enqueue_unique("sync", {"id": 7}), 3)
        assert second is not None and second.id != first.id
        # ... and that one waits, so the next is refused.
        assert queue.enqueue_unique("sync", {"id": 7}) is None
    finally:
        queue.client.unpause("sync")
        release.set()
    assert runs.wait_for(2, 5)
    assert [r["id"] for r in runs.snapshot()] == [first.id, second.id]


def test_a_unique_job_can_be_enqueued_again_after_it_completed(queue, qworker, runs):
    worker = qworker()
    worker.register("sync", runs.add)
    assert queue.enqueue_unique("sync", {"id": 1}) is not None
    assert worker.drain(5)
    assert queue.enqueue_unique("sync", {"id": 1}) is not None


def test_a_unique_job_in_the_retry_set_no_longer_holds_its_key(queue, qworker):
    # Claimed means released: a failed run's job waits in the retry set without the key.
    worker = qworker()

    @worker.handler("sync", backoff=lambda job: 60)
    def sync(job):
        raise RuntimeError("later")

    assert queue.enqueue_unique("sync", {"id": 1}) is not None
    worker.start()
    assert settle(lambda: queue.client.retry_jobs().total == 1)
    assert queue.enqueue_unique("sync", {"id": 1}) is not None


def test_enqueue_unique_in_is_unique_while_scheduled(queue):
    later = queue.enqueue_unique_in("sync", 60, {"id": 1})
    assert later is not None
    assert later.run_at - later.enqueued_at == pytest.approx(60, abs=0.5)
    assert queue.enqueue_unique_in("sync", 60, {"id": 1}) is None
    assert queue.enqueue_unique_in("sync", 5, {"id": 1}) is None
    assert queue.enqueue_unique("sync", {"id": 1}) is None
    assert info(queue, "sync").scheduled == 1
    assert info(queue, "sync").ready == 0


def test_a_unique_scheduled_job_releases_its_key_when_deleted(queue):
    later = queue.enqueue_unique_in("sync", 60, {"id": 1})
    assert queue.client.delete_scheduled_job(later.id) is True
    again = queue.enqueue_unique_in("sync", 60, {"id": 1})
    assert again is not None and again.id != later.id


def test_a_unique_scheduled_job_releases_its_key_when_it_runs(queue, qworker, runs):
    worker = qworker()
    worker.register("sync", runs.add)
    worker.start()
    assert queue.enqueue_unique_in("sync", 0.1, {"id": 1}) is not None
    assert runs.wait_for(1, 3)
    assert settle(lambda: queue.enqueue_unique("sync", {"id": 1}), 2) is not None


def test_enqueue_unique_by_key_ignores_the_args(queue):
    first = queue.enqueue_unique_by_key("report", {"day": 1}, key="daily")
    assert first is not None and first.args == {"day": 1}
    assert queue.enqueue_unique_by_key("report", {"day": 2}, key="daily") is None
    assert queue.enqueue_unique_by_key("report", {"day": 1}, key="weekly") is not None
    assert info(queue, "report").ready == 2


def test_unique_keys_belong_to_a_job_name(queue):
    assert queue.enqueue_unique_by_key("report", {}, key="k") is not None
    assert queue.enqueue_unique_by_key("invoice", {}, key="k") is not None


def test_only_one_of_many_concurrent_unique_enqueues_wins(open_queue):
    handles = [open_queue() for _ in range(10)]
    barrier = threading.Barrier(50)
    results = []
    lock = threading.Lock()

    def enqueue(i):
        barrier.wait(5)
        job = handles[i % 10].enqueue_unique("race", {"id": 1})
        with lock:
            results.append(job)

    threads = [threading.Thread(target=enqueue, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 50
    assert sum(r is not None for r in results) == 1
    assert info(handles[0], "race").ready == 1


def test_aenqueue_unique_shares_keys_with_enqueue_unique(queue, run_async):
    assert queue.enqueue_unique("sync", {"id": 3}) is not None

    async def main():
        return await queue.aenqueue_unique("sync", {"id": 3})

    assert run_async(main()) is None


def test_unique_enqueues_in_one_event_loop_turn_give_one_job(queue, run_async):
    import asyncio

    async def main():
        return await asyncio.gather(*(queue.aenqueue_unique("sync", {"id": 9}) for _ in range(20)))

    results = run_async(main())
    assert sum(r is not None for r in results) == 1
    assert info(queue, "sync").ready == 1
