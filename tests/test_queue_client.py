"""queue.client: per-name counts, pages of scheduled/retry/dead jobs, acting on them, worker
pools and busy workers with check-ins, pause, stats. memory:// and redis://."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
from queue_fixtures import *  # noqa: F403
from queue_fixtures import info, settle

import workhorse as wh

pytestmark = pytest.mark.timeout(30)


def make_dead(queue, qworker, n, name="doomed"):
    """n jobs of name in the dead set (Result.dead), by a worker stopped afterwards."""
    worker = qworker()
    worker.handler(name)(lambda job: wh.Result.dead(f"reason {job.args['i']}"))
    jobs = queue.enqueue_many([(name, {"i": i}) for i in range(n)])
    assert worker.drain(5)
    assert settle(lambda: queue.client.dead_jobs().total == n)
    worker.stop(3)
    return jobs


def make_retry(queue, qworker, n, name="flaky"):
    """n jobs of name in the retry set for the next minute, by a worker stopped afterwards."""
    worker = qworker()
    worker.handler(name, backoff=lambda job: 60)(lambda job: 1 / 0)
    jobs = queue.enqueue_many([(name, {"i": i}) for i in range(n)])
    assert worker.drain(5)
    assert settle(lambda: queue.client.retry_jobs().total == n)
    worker.stop(3)
    return jobs


def all_pages(fetch):
    """Every job on every page (stopping at the first empty one), and the totals reported."""
    jobs, totals = [], set()
    for page in range(1, 200):
        got = fetch(page)
        totals.add(got.total)
        if not got.jobs:
            break
        jobs.extend(got.jobs)
    return jobs, totals


# -- queues() --------------------------------------------------------------------------------


def test_queues_lists_every_name_with_its_counts(queue, qworker):
    make_dead(queue, qworker, 2)
    make_retry(queue, qworker, 3)
    queue.enqueue_many([("waiting", None)] * 4)
    queue.enqueue_in("waiting", 60)
    queue.client.pause("waiting")
    by_name = {q.name: q for q in queue.client.queues()}
    assert all(isinstance(q, wh.QueueInfo) for q in by_name.values())
    w, f, d = by_name["waiting"], by_name["flaky"], by_name["doomed"]
    assert (w.ready, w.scheduled, w.retry, w.dead, w.paused, w.running) == (4, 1, 0, 0, True, 0)
    assert (f.ready, f.scheduled, f.retry, f.dead, f.paused, f.running) == (0, 0, 3, 0, False, 0)
    assert (d.ready, d.scheduled, d.retry, d.dead, d.paused, d.running) == (0, 0, 0, 2, False, 0)


def test_latency_is_how_long_the_oldest_ready_job_has_waited(queue):
    queue.enqueue("slowpoke")
    time.sleep(0.4)
    queue.enqueue("slowpoke")
    latency = info(queue, "slowpoke").latency
    assert 0.35 <= latency <= 5, latency


def test_latency_is_zero_without_ready_jobs(queue):
    queue.enqueue_in("later", 60)
    assert info(queue, "later").latency == 0


# -- pages -----------------------------------------------------------------------------------


def test_scheduled_jobs_pages_cover_every_scheduled_job_once(queue):
    jobs = [queue.enqueue_in("later", 60 + i, {"i": i}) for i in range(45)]
    queue.enqueue("now")  # not scheduled
    got, totals = all_pages(queue.client.scheduled_jobs)
    assert totals == {45}
    assert sorted(j.id for j in got) == sorted(j.id for j in jobs)
    first = queue.client.scheduled_jobs()
    assert isinstance(first, wh.Page) and first.total == 45 and 0 < len(first.jobs) <= 45
    assert all(isinstance(j, wh.QueuedJob) for j in first.jobs)
    by_id = {j.id: j for j in got}
    for j in jobs:
        assert by_id[j.id].args == j.args
        assert by_id[j.id].run_at == pytest.approx(j.run_at, abs=0.01)


def test_a_page_past_the_end_is_empty_with_the_total(queue):
    for i in range(3):
        queue.enqueue_in("later", 60, {"i": i})
    page = queue.client.scheduled_jobs(page=50)
    assert page.jobs == [] and page.total == 3


def test_empty_sets_give_empty_pages(queue):
    for fetch in (queue.client.scheduled_jobs, queue.client.retry_jobs, queue.client.dead_jobs):
        page = fetch()
        assert (page.jobs, page.total) == ([], 0)


@pytest.mark.parametrize("page", [0, -1])
def test_a_page_below_1_is_a_value_error(queue, page):
    with pytest.raises(ValueError):
        queue.client.dead_jobs(page=page)


@pytest.mark.parametrize("page", ["1", 1.0, None])
def test_a_page_that_is_not_an_int_is_a_type_error(queue, page):
    with pytest.raises(TypeError):
        queue.client.scheduled_jobs(page=page)


def test_retry_jobs_show_fails_last_error_and_due_time(queue, qworker):
    jobs = make_retry(queue, qworker, 25)
    got, totals = all_pages(queue.client.retry_jobs)
    assert totals == {25}
    assert sorted(j.id for j in got) == sorted(j.id for j in jobs)
    for j in got:
        assert j.fails == 1
        assert "ZeroDivisionError" in j.last_error or "division" in j.last_error
        assert j.run_at > time.time() + 30


def test_dead_jobs_show_reason_and_died_at(queue, qworker):
    before = time.time()
    jobs = make_dead(queue, qworker, 25)
    got, totals = all_pages(queue.client.dead_jobs)
    assert totals == {25}
    assert sorted(j.id for j in got) == sorted(j.id for j in jobs)
    for j in got:
        assert j.reason == f"reason {j.args['i']}"
        assert before - 2 <= j.died_at <= time.time() + 2


# -- acting on dead, retry and scheduled jobs ------------------------------------------------


def test_retry_dead_job_puts_it_back_to_run(queue, qworker, runs):
    (dead,) = make_dead(queue, qworker, 1)
    assert queue.client.retry_dead_job(dead.id) is True
    assert queue.client.dead_jobs().total == 0
    worker = qworker()
    worker.register("doomed", runs.add)
    assert worker.drain(5)
    assert [(r["id"], r["args"]) for r in runs.snapshot()] == [(dead.id, {"i": 0})]


def test_retry_dead_job_of_an_unknown_id_is_false(queue, qworker):
    make_dead(queue, qworker, 1)
    assert queue.client.retry_dead_job("no-such-id") is False
    assert queue.client.dead_jobs().total == 1


def test_retry_all_dead_jobs_returns_how_many_and_they_run(queue, qworker, runs):
    jobs = make_dead(queue, qworker, 3)
    assert queue.client.retry_all_dead_jobs() == 3
    assert queue.client.dead_jobs().total == 0
    assert queue.client.retry_all_dead_jobs() == 0
    worker = qworker()
    worker.register("doomed", runs.add)
    assert worker.drain(5)
    assert sorted(r["id"] for r in runs.snapshot()) == sorted(j.id for j in jobs)


def test_delete_dead_job_removes_it_once(queue, qworker):
    first, second = make_dead(queue, qworker, 2)
    assert queue.client.delete_dead_job(first.id) is True
    assert queue.client.delete_dead_job(first.id) is False
    assert [j.id for j in queue.client.dead_jobs().jobs] == [second.id]
    assert queue.client.retry_dead_job(first.id) is False


def test_delete_all_dead_jobs_returns_how_many(queue, qworker):
    make_dead(queue, qworker, 4)
    assert queue.client.delete_all_dead_jobs() == 4
    assert queue.client.dead_jobs().total == 0
    assert queue.client.delete_all_dead_jobs() == 0
    assert info(queue, "doomed") is None or info(queue, "doomed").dead == 0


def test_delete_scheduled_job_means_it_never_runs(queue, qworker, runs):
    job = queue.enqueue_in("later", 0.3)
    keep = queue.enqueue_in("later", 0.3)
    assert queue.client.delete_scheduled_job(job.id) is True
    assert queue.client.delete_scheduled_job(job.id) is False
    worker = qworker()
    worker.register("later", runs.add)
    worker.start()
    assert runs.wait_for(1, 3)
    time.sleep(0.3)
    assert [r["id"] for r in runs.snapshot()] == [keep.id]


def test_delete_retry_job_removes_it_from_the_retry_set(queue, qworker):
    first, second = make_retry(queue, qworker, 2)
    assert queue.client.delete_retry_job(first.id) is True
    assert queue.client.delete_retry_job(first.id) is False
    assert [j.id for j in queue.client.retry_jobs().jobs] == [second.id]


def test_deleting_from_one_set_leaves_the_others_alone(queue, qworker):
    (dead,) = make_dead(queue, qworker, 1)
    (retry,) = make_retry(queue, qworker, 1)
    scheduled = queue.enqueue_in("later", 60)
    assert queue.client.delete_dead_job(scheduled.id) is False
    assert queue.client.delete_dead_job(retry.id) is False
    assert queue.client.delete_retry_job(dead.id) is False
    assert queue.client.delete_retry_job(scheduled.id) is False
    assert queue.client.delete_scheduled_job(dead.id) is False
    assert queue.client.delete_scheduled_job(retry.id) is False
    assert queue.client.retry_dead_job(retry.id) is False
    assert queue.client.scheduled_jobs().total == 1
    assert queue.client.retry_jobs().total == 1
    assert queue.client.dead_jobs().total == 1


# -- workers ---------------------------------------------------------------------------------


def test_worker_pools_list_a_started_worker_with_its_heartbeat(queue, qworker):
    worker = qworker(concurrency=3)
    worker.register("a", lambda job: None)
    worker.register("b", lambda job: None)
    worker.start()
    pools = settle(lambda: [p for p in queue.client.worker_pools() if p.pid == os.getpid()])
    assert len(pools) == 1, queue.client.worker_pools()
    (pool,) = pools
    assert isinstance(pool.worker_id, str) and pool.worker_id
    assert pool.host == socket.gethostname()
    assert sorted(pool.names) == ["a", "b"]
    assert pool.concurrency == 3
    assert abs(pool.heartbeat_at - time.time()) < 10


def test_each_worker_has_its_own_pool_entry(queue, qworker):
    for n in (1, 2):
        w = qworker(concurrency=n)
        w.register(f"n{n}", lambda job: None)
        w.start()
    pools = settle(lambda: len(queue.client.worker_pools()) == 2 and queue.client.worker_pools())
    assert pools
    assert len({p.worker_id for p in pools}) == 2
    assert sorted(p.concurrency for p in pools) == [1, 2]


def test_a_queue_only_used_to_enqueue_has_no_worker_pool(queue):
    queue.enqueue("x")
    assert queue.client.worker_pools() == []


def test_busy_workers_show_running_jobs_with_their_last_checkin(queue, qworker):
    checked = threading.Event()
    release = threading.Event()
    worker = qworker()

    @worker.handler("long")
    def long(job):
        job.checkin("sent 1 of 10")
        job.checkin("sent 3 of 10")
        checked.set()
        release.wait(5)

    job = queue.enqueue("long", {"n": 10})
    worker.start()
    try:
        assert checked.wait(5)
        busy = settle(lambda: [b for b in queue.client.busy_workers() if b.job_id == job.id])
        assert len(busy) == 1
        (b,) = busy
        assert b.name == "long"
        assert b.checkin == "sent 3 of 10"
        assert abs(b.checkin_at - time.time()) < 5
        assert abs(b.started_at - time.time()) < 5
        assert b.started_at <= b.checkin_at + 0.01
    finally:
        release.set()
    assert worker.drain(5)
    assert settle(lambda: queue.client.busy_workers() == [])


def test_a_busy_job_without_checkin_has_none(queue, qworker):
    release = threading.Event()
    worker = qworker()
    worker.register("quiet", lambda job: release.wait(5))
    job = queue.enqueue("quiet")
    worker.start()
    try:
        busy = settle(lambda: [b for b in queue.client.busy_workers() if b.job_id == job.id])
        assert busy
        assert busy[0].checkin is None and busy[0].checkin_at is None
    finally:
        release.set()


def test_busy_workers_list_only_jobs_whose_handler_started(queue, qworker):
    # One slot, three jobs: one runs, the others wait (or sit prefetched); only one is busy.
    started = []
    release = threading.Event()
    worker = qworker(concurrency=1)

    @worker.handler("one")
    def one(job):
        started.append(job.id)
        release.wait(5)

    queue.enqueue_many([("one", None)] * 3)
    worker.start()
    try:
        assert settle(lambda: started)
        time.sleep(0.2)
        assert [b.job_id for b in queue.client.busy_workers()] == started
    finally:
        release.set()


# -- stats -----------------------------------------------------------------------------------


def test_stats_count_processed_failed_and_dead(queue, qworker):
    worker = qworker()
    worker.register("ok", lambda job: None)
    worker.handler("bad", backoff=lambda job: 60)(lambda job: 1 / 0)
    worker.handler("gone")(lambda job: wh.Result.dead("no"))
    before = queue.client.stats()
    for key in ("processed", "failed", "dead", "stale_acks", "reaped"):
        assert before[key] == 0, before
    queue.enqueue_many([("ok", None)] * 3 + [("bad", None), ("gone", None)])
    assert worker.drain(5)
    stats = settle(lambda: (s := queue.client.stats())["dead"] == 1 and s["failed"] >= 1 and s)
    assert stats, queue.client.stats()
    assert stats["processed"] >= 3
    assert stats["stale_acks"] == 0 and stats["reaped"] == 0
    assert all(isinstance(stats[k], int) for k in ("processed", "failed", "dead"))


def test_stats_are_shared_by_handles_on_one_store(open_queue):
    worker_queue, other = open_queue(), open_queue()
    worker = wh.Worker(concurrency=2, queue=worker_queue, grace=1.0)
    worker.register("ok", lambda job: None)
    try:
        other.enqueue_many([("ok", None)] * 4)
        assert worker.drain(5)
        assert settle(lambda: other.client.stats()["processed"] == 4)
    finally:
        worker.stop(3)
