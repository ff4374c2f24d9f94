"""What a worker claims: only the names it has handlers for, nothing of a paused name, at most
max_concurrency runs of a name across workers, at most `concurrency` runs in all, names weighed
by priority. memory:// and redis://."""

from __future__ import annotations

import collections
import threading
import time

import pytest
from queue_fixtures import *  # noqa: F403
from queue_fixtures import info, settle

import workhorse as wh

pytestmark = pytest.mark.timeout(30)


class Active:
    """How many runs are going at once, and the most seen."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.done = 0

    def run(self, seconds: float) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(seconds)
        with self.lock:
            self.now -= 1
            self.done += 1


def test_a_worker_claims_only_names_it_has_handlers_for(queue, qworker, runs):
    worker = qworker()
    worker.register("mine", runs.add)
    queue.enqueue("mine")
    queue.enqueue("theirs", {"n": 1})
    assert worker.drain(5)
    time.sleep(0.2)
    assert [r["name"] for r in runs.snapshot()] == ["mine"]
    q = info(queue, "theirs")
    assert (q.ready, q.running, q.dead, q.retry) == (1, 0, 0, 0)


def test_workers_sharing_a_store_each_take_their_own_names(open_queue, runs):
    left = wh.Worker(concurrency=2, queue=open_queue(), grace=1.0)
    right = wh.Worker(concurrency=2, queue=open_queue(), grace=1.0)
    left.register("left", lambda job: runs.add(job, by="left"))
    right.register("right", lambda job: runs.add(job, by="right"))
    producer = open_queue()
    try:
        producer.enqueue_many([("left", {"i": i}) for i in range(5)])
        producer.enqueue_many([("right", {"i": i}) for i in range(5)])
        left.start()
        right.start()
        assert runs.wait_for(10, 5)
        assert all(r["by"] == r["name"] for r in runs.snapshot())
    finally:
        left.stop(3)
        right.stop(3)


def test_each_job_runs_once_with_two_workers_on_one_store(open_queue, runs):
    workers = [wh.Worker(concurrency=3, queue=open_queue(), grace=1.0) for _ in range(2)]
    for w in workers:
        w.register("shared", runs.add)
    producer = open_queue()
    try:
        jobs = producer.enqueue_many([("shared", {"i": i}) for i in range(100)])
        for w in workers:
            w.start()
        assert runs.wait_for(100, 10)
        time.sleep(0.2)
        ids = [r["id"] for r in runs.snapshot()]
        assert sorted(ids) == sorted(j.id for j in jobs)
    finally:
        for w in workers:
            w.stop(3)


def test_jobs_of_one_name_run_oldest_first_on_one_slot(queue, qworker, runs):
    queue.enqueue_many([("fifo", {"i": i}) for i in range(20)])
    worker = qworker(concurrency=1)
    worker.register("fifo", runs.add)
    assert worker.drain(5)
    assert [r["args"]["i"] for r in runs.snapshot()] == list(range(20))


def test_claimed_jobs_count_as_running_not_ready(queue, qworker):
    release = threading.Event()
    worker = qworker(concurrency=2)

    @worker.handler("hold")
    def hold(job):
        release.wait(5)

    queue.enqueue_many([("hold", None)] * 3)
    worker.start()
    try:
        # Two run; the third may wait in the queue or be claimed ahead (prefetch): never both.
        assert settle(lambda: info(queue, "hold").running >= 2)
        q = info(queue, "hold")
        assert q.running + q.ready == 3, q
    finally:
        release.set()
    assert worker.drain(5)
    assert info(queue, "hold").running == 0


# -- pause -----------------------------------------------------------------------------------


def test_paused_names_are_not_claimed_until_unpaused(queue, qworker, runs):
    queue.client.pause("report")
    queue.enqueue("report", {"n": 1})
    worker = qworker()
    worker.register("report", runs.add)
    worker.start()
    time.sleep(0.4)
    assert len(runs) == 0
    q = info(queue, "report")
    assert q.paused is True and q.ready == 1
    queue.client.unpause("report")
    assert runs.wait_for(1, 3)
    assert info(queue, "report").paused is False


def test_pausing_a_name_with_a_running_worker_stops_new_claims(queue, qworker, runs):
    worker = qworker(concurrency=1)
    worker.register("tick", runs.add)
    worker.start()
    queue.enqueue("tick")
    assert runs.wait_for(1, 3)
    queue.client.pause("tick")
    time.sleep(0.05)
    queue.enqueue_many([("tick", None)] * 3)
    time.sleep(0.4)
    assert len(runs) == 1
    queue.client.unpause("tick")
    assert runs.wait_for(4, 3)


def test_pausing_one_name_leaves_the_others_running(queue, qworker, runs):
    queue.client.pause("held")
    worker = qworker()
    worker.register("held", runs.add)
    worker.register("free", runs.add)
    queue.enqueue("held")
    queue.enqueue("free")
    worker.start()
    assert runs.wait_for(1, 3)
    time.sleep(0.3)
    assert [r["name"] for r in runs.snapshot()] == ["free"]


def test_a_pause_is_seen_by_every_handle_on_the_store(open_queue, runs):
    controller, queue = open_queue(), open_queue()
    controller.client.pause("x")
    worker = wh.Worker(concurrency=2, queue=queue, grace=1.0)
    worker.register("x", runs.add)
    try:
        queue.enqueue("x")
        worker.start()
        time.sleep(0.3)
        assert len(runs) == 0
        assert info(queue, "x").paused is True
        controller.client.unpause("x")
        assert runs.wait_for(1, 3)
    finally:
        worker.stop(3)


def test_scheduled_jobs_of_a_paused_name_wait_too(queue, qworker, runs):
    queue.client.pause("later")
    queue.enqueue_in("later", 0.1)
    worker = qworker()
    worker.register("later", runs.add)
    worker.start()
    time.sleep(0.5)
    assert len(runs) == 0
    queue.client.unpause("later")
    assert runs.wait_for(1, 3)


# -- concurrency -----------------------------------------------------------------------------


def test_max_concurrency_caps_the_runs_of_a_name_at_once(queue, qworker):
    active = Active()
    worker = qworker(concurrency=8)

    @worker.handler("capped", max_concurrency=2)
    def capped(job):
        active.run(0.05)

    queue.enqueue_many([("capped", None)] * 12)
    assert worker.drain(10)
    assert active.done == 12
    assert active.most == 2


def test_max_concurrency_holds_across_workers(open_queue):
    active = Active()
    workers = []
    for _ in range(3):
        w = wh.Worker(concurrency=4, queue=open_queue(), grace=1.0)
        w.handler("capped", max_concurrency=2)(lambda job: active.run(0.05))
        workers.append(w)
    producer = open_queue()
    try:
        producer.enqueue_many([("capped", None)] * 16)
        for w in workers:
            w.start()
        assert settle(lambda: active.done == 16, 10)
        assert active.most == 2
    finally:
        for w in workers:
            w.stop(3)


def test_max_concurrency_of_one_name_does_not_hold_back_others(queue, qworker):
    capped, free = Active(), Active()
    worker = qworker(concurrency=6)
    worker.handler("capped", max_concurrency=1)(lambda job: capped.run(0.1))
    worker.handler("free")(lambda job: free.run(0.1))
    queue.enqueue_many([("capped", None)] * 4 + [("free", None)] * 8)
    assert worker.drain(10)
    assert capped.most == 1
    assert free.most >= 3


def test_max_concurrency_0_means_no_cap(queue, qworker):
    active = Active()
    worker = qworker(concurrency=5)
    worker.handler("any", max_concurrency=0)(lambda job: active.run(0.1))
    queue.enqueue_many([("any", None)] * 10)
    assert worker.drain(10)
    assert active.most == 5


def test_the_worker_concurrency_bounds_queued_runs(queue, qworker):
    active = Active()
    worker = qworker(concurrency=3)
    worker.register("a", lambda job: active.run(0.05))
    worker.register("b", lambda job: active.run(0.05))
    queue.enqueue_many([("a", None)] * 8 + [("b", None)] * 8)
    assert worker.drain(10)
    assert active.done == 16
    assert active.most == 3


def test_async_handlers_count_toward_the_worker_concurrency(queue, qworker):
    import asyncio

    lock = threading.Lock()
    state = {"now": 0, "most": 0, "done": 0}
    worker = qworker(concurrency=3)

    @worker.handler("a")
    async def a(job):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        await asyncio.sleep(0.05)
        with lock:
            state["now"] -= 1
            state["done"] += 1

    queue.enqueue_many([("a", None)] * 12)
    assert worker.drain(10)
    assert state["done"] == 12
    assert state["most"] == 3


# -- priority --------------------------------------------------------------------------------


def test_priority_weighs_which_name_is_claimed_first(queue, qworker, runs):
    # gocraft's weighted sampling: with 100 against 1, nearly every pick is the heavy name while
    # both have ready work. Loose: of the first 40 runs, at least 30 are of the heavy name.
    worker = qworker(concurrency=1)
    worker.handler("heavy", priority=100)(runs.add)
    worker.handler("light", priority=1)(runs.add)
    queue.enqueue_many([("light", None)] * 150 + [("heavy", None)] * 150)
    worker.start()
    assert runs.wait_for(40, 10)
    first = collections.Counter(r["name"] for r in runs.snapshot()[:40])
    assert first["heavy"] >= 30, first


def test_equal_priorities_share_the_work(queue, qworker, runs):
    # Sampling, not strict order: with equal weights neither name waits for the other's backlog.
    worker = qworker(concurrency=1)
    worker.handler("one", priority=10)(runs.add)
    worker.handler("two", priority=10)(runs.add)
    queue.enqueue_many([("one", None)] * 150 + [("two", None)] * 150)
    worker.start()
    assert runs.wait_for(60, 10)
    first = collections.Counter(r["name"] for r in runs.snapshot()[:60])
    assert first["one"] >= 10 and first["two"] >= 10, first


def test_a_low_priority_name_still_runs_when_alone(queue, qworker, runs):
    worker = qworker(concurrency=1)
    worker.handler("heavy", priority=100_000)(runs.add)
    worker.handler("light", priority=1)(runs.add)
    queue.enqueue_many([("light", None)] * 5)
    assert worker.drain(5)
    assert len(runs) == 5
