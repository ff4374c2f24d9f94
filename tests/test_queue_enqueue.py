"""Enqueueing into a durable queue (DESIGN.md section 3): what enqueue and its variants return,
when the job is due, what arguments may be, and the awaitable twins. memory:// and redis://."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest
from queue_fixtures import *  # noqa: F403
from queue_fixtures import info

import workhorse as wh

pytestmark = pytest.mark.timeout(30)

# Backends and this process disagree on the clock by little; the tests allow this much.
SLACK = 2.0


def test_enqueue_returns_a_queued_job_with_its_id_name_args_and_times(queue):
    before = time.time()
    job = queue.enqueue("send_email", {"to": "a@b.c"})
    after = time.time()
    assert isinstance(job, wh.QueuedJob)
    assert isinstance(job.id, str) and job.id
    assert job.name == "send_email"
    assert job.args == {"to": "a@b.c"}
    assert isinstance(job.enqueued_at, float) and isinstance(job.run_at, float)
    assert before - SLACK <= job.enqueued_at <= after + SLACK
    assert abs(job.run_at - job.enqueued_at) < 0.5
    assert job.fails == 0
    assert job.last_error is None
    assert job.died_at is None
    assert job.reason is None


def test_every_enqueue_gets_a_distinct_id(queue):
    ids = {queue.enqueue("send_email", {"to": "a@b.c"}).id for _ in range(200)}
    assert len(ids) == 200


def test_an_enqueued_job_is_ready_in_its_names_queue(queue):
    queue.enqueue("send_email", {"to": "a@b.c"})
    queue.enqueue("send_email", {"to": "b@c.d"})
    queue.enqueue("report")
    assert info(queue, "send_email").ready == 2
    assert info(queue, "report").ready == 1


def test_args_none_or_left_out_is_an_empty_dict(queue, qworker, runs):
    assert queue.enqueue("noargs").args == {}
    assert queue.enqueue("noargs", None).args == {}
    worker = qworker()
    worker.register("noargs", runs.add)
    assert worker.drain(5)
    assert [r["args"] for r in runs.snapshot()] == [{}, {}]


def test_json_arguments_reach_the_handler_unchanged(queue, qworker, runs):
    args = {
        "s": "héllo ✓",
        "i": 2**53,
        "f": 1.5,
        "b": True,
        "n": None,
        "l": [1, "two", [3.0], {"four": 4}],
        "d": {"nested": {"deeper": []}},
        "": "empty key",
    }
    queue.enqueue("echo", args)
    worker = qworker()
    worker.register("echo", runs.add)
    assert worker.drain(5)
    assert [r["args"] for r in runs.snapshot()] == [args]


def test_enqueued_args_are_a_copy_not_the_callers_dict(queue, qworker, runs):
    args = {"n": 1}
    queue.enqueue("echo", args)
    args["n"] = 2
    worker = qworker()
    worker.register("echo", runs.add)
    assert worker.drain(5)
    assert runs.snapshot()[0]["args"] == {"n": 1}


def test_enqueue_in_takes_seconds_or_a_timedelta(queue):
    in_secs = queue.enqueue_in("later", 30, {"k": 1})
    in_delta = queue.enqueue_in("later", dt.timedelta(minutes=2), {"k": 2})
    assert in_secs.run_at - in_secs.enqueued_at == pytest.approx(30, abs=0.5)
    assert in_delta.run_at - in_delta.enqueued_at == pytest.approx(120, abs=0.5)
    q = info(queue, "later")
    assert (q.ready, q.scheduled) == (0, 2)
    page = queue.client.scheduled_jobs()
    assert page.total == 2
    assert {j.id for j in page.jobs} == {in_secs.id, in_delta.id}


def test_enqueue_at_takes_epoch_seconds(queue):
    when = time.time() + 100
    job = queue.enqueue_at("later", when, {"k": 1})
    assert job.run_at == pytest.approx(when, abs=SLACK)
    assert info(queue, "later").scheduled == 1


def test_enqueue_at_takes_a_naive_datetime_as_local_time(queue):
    local = dt.datetime.now() + dt.timedelta(seconds=200)  # naive: local time
    job = queue.enqueue_at("later", local)
    assert job.run_at == pytest.approx(time.time() + 200, abs=SLACK)


def test_enqueue_at_takes_an_aware_datetime(queue):
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=300)
    job = queue.enqueue_at("later", when.astimezone(dt.timezone(dt.timedelta(hours=-7))))
    assert job.run_at == pytest.approx(when.timestamp(), abs=SLACK)


def test_enqueue_at_a_past_time_runs_at_once(queue, qworker, runs):
    queue.enqueue_at("past", time.time() - 3600, {"k": 1})
    worker = qworker()
    worker.register("past", runs.add)
    worker.start()
    assert runs.wait_for(1, 3)


def test_enqueue_many_returns_one_job_per_pair_in_order(queue):
    pairs = [("send_email", {"to": f"u{i}@b.c"}) for i in range(50)] + [("report", None)]
    jobs = queue.enqueue_many(pairs)
    assert [(j.name, j.args) for j in jobs] == [(n, a or {}) for n, a in pairs]
    assert len({j.id for j in jobs}) == 51
    assert all(isinstance(j, wh.QueuedJob) and j.fails == 0 for j in jobs)
    assert info(queue, "send_email").ready == 50
    assert info(queue, "report").ready == 1


def test_enqueue_many_of_nothing_is_an_empty_list(queue):
    assert queue.enqueue_many([]) == []
    assert queue.client.queues() == [] or all(q.ready == 0 for q in queue.client.queues())


def test_enqueue_many_takes_more_jobs_than_one_batch(queue):
    jobs = queue.enqueue_many(("bulk", {"i": i}) for i in range(25_001))
    assert len(jobs) == 25_001
    assert len({j.id for j in jobs}) == 25_001
    assert info(queue, "bulk").ready == 25_001


def test_names_need_no_handler_to_be_enqueued(queue):
    job = queue.enqueue("nobody.handles.this", {"x": 1})
    assert job.name == "nobody.handles.this"
    assert info(queue, "nobody.handles.this").ready == 1


def test_memory_url_without_a_name_is_a_new_store_per_call():
    first = wh.Queue.from_url("memory://")
    second = wh.Queue.from_url("memory://")
    first.enqueue("alone", {"n": 1})
    assert info(first, "alone").ready == 1
    assert info(second, "alone") is None or info(second, "alone").ready == 0


def test_memory_url_with_a_name_is_shared_by_name_in_the_process():
    name = f"shared-{time.monotonic_ns()}"
    first = wh.Queue.from_url(f"memory://{name}")
    second = wh.Queue.from_url(f"memory://{name}")
    other = wh.Queue.from_url(f"memory://{name}-other")
    first.enqueue("together", {"n": 1})
    assert info(second, "together").ready == 1
    assert info(other, "together") is None or info(other, "together").ready == 0


def test_two_handles_on_one_store_see_each_others_jobs(open_queue):
    producer, consumer = open_queue(), open_queue()
    job = producer.enqueue("shared", {"n": 1})
    assert info(consumer, "shared").ready == 1
    later = producer.enqueue_in("shared", 60)
    assert [j.id for j in consumer.client.scheduled_jobs().jobs] == [later.id]
    assert job.id != later.id


def test_namespaces_keep_queues_apart(open_queue):
    one = open_queue(namespace="left")
    two = open_queue(namespace="right")
    one.enqueue("apart")
    assert info(one, "apart").ready == 1
    assert info(two, "apart") is None or info(two, "apart").ready == 0


# -- the awaitable twins -------------------------------------------------------------------


def test_awaitable_twins_enqueue_like_the_sync_calls(queue, run_async):
    async def main():
        now = await queue.aenqueue("a", {"k": 1})
        later = await queue.aenqueue_in("a", 30, {"k": 2})
        at = await queue.aenqueue_at("a", time.time() + 60, {"k": 3})
        first = await queue.aenqueue_unique("u", {"k": 4})
        again = await queue.aenqueue_unique("u", {"k": 4})
        many = await queue.aenqueue_many([("m", {"i": i}) for i in range(5)])
        return now, later, at, first, again, many

    now, later, at, first, again, many = run_async(main())
    assert isinstance(now, wh.QueuedJob) and now.args == {"k": 1}
    assert later.run_at - later.enqueued_at == pytest.approx(30, abs=0.5)
    assert at.run_at == pytest.approx(time.time() + 60, abs=SLACK)
    assert isinstance(first, wh.QueuedJob)
    assert again is None
    assert [j.args for j in many] == [{"i": i} for i in range(5)]
    assert info(queue, "a").ready == 1
    assert info(queue, "a").scheduled == 2
    assert info(queue, "u").ready == 1
    assert info(queue, "m").ready == 5


def test_many_aenqueues_at_once_all_land_with_their_own_ids(queue, run_async):
    async def main():
        return await asyncio.gather(*(queue.aenqueue("burst", {"i": i}) for i in range(300)))

    jobs = run_async(main())
    assert [j.args["i"] for j in jobs] == list(range(300))
    assert len({j.id for j in jobs}) == 300
    assert info(queue, "burst").ready == 300


def test_aenqueue_does_not_block_the_event_loop(queue, run_async):
    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        for i in range(50):
            await queue.aenqueue("loop", {"i": i})
        task.cancel()
        return ticks

    assert run_async(main()) > 0


def test_aenqueue_rejects_bad_args_with_type_error(queue, run_async):
    async def main():
        with pytest.raises(TypeError):
            await queue.aenqueue("x", [1, 2])
        with pytest.raises(TypeError):
            await queue.aenqueue_many([("x", {"s": {1}})])

    run_async(main())
    assert info(queue, "x") is None or info(queue, "x").ready == 0


# -- job_id: one job per id (RELIABILITY.md row 13) ------------------------------------------------


def test_enqueuing_the_same_job_id_twice_makes_one_job(queue, qworker, runs):
    first = queue.enqueue("send_email", {"to": "a@b.c"}, job_id="order-42")
    again = queue.enqueue("send_email", {"to": "other@b.c"}, job_id="order-42")
    assert first.id == again.id == "order-42"
    # The second call answers the job as stored: its arguments and times are the first's.
    assert again.args == {"to": "a@b.c"}
    assert again.enqueued_at == pytest.approx(first.enqueued_at, abs=1e-3)
    assert info(queue, "send_email").ready == 1
    worker = qworker()
    worker.register("send_email", runs.add)
    assert worker.drain(5)
    assert [(r["id"], r["args"]) for r in runs.snapshot()] == [("order-42", {"to": "a@b.c"})]


def test_a_job_id_is_one_job_across_every_enqueue_variant(queue, run_async):
    when = time.time() + 100
    jobs = [
        queue.enqueue_in("later", 50, {"k": 1}, job_id="j1"),
        queue.enqueue("later", {"k": 2}, job_id="j1"),
        queue.enqueue_at("later", when, {"k": 3}, job_id="j1"),
        queue.enqueue_unique("later", {"k": 4}, job_id="j1"),
        queue.enqueue_unique_in("later", 5, {"k": 5}, job_id="j1"),
        queue.enqueue_unique_at("later", when, {"k": 6}, job_id="j1"),
        queue.enqueue_unique_by_key("later", {"k": 7}, key="x", job_id="j1"),
        run_async(queue.aenqueue("later", {"k": 8}, job_id="j1")),
        run_async(queue.aenqueue_at("later", when, {"k": 9}, job_id="j1")),
        run_async(queue.aenqueue_unique("later", {"k": 10}, job_id="j1")),
    ]
    assert {(j.id, j.args["k"]) for j in jobs} == {("j1", 1)}
    q = info(queue, "later")
    assert (q.ready, q.scheduled) == (0, 1)
    # The refused copies took no unique key: an equal unique job is enqueued.
    assert queue.enqueue_unique("later", {"k": 4}) is not None


def test_a_job_id_is_free_again_once_its_job_is_done(queue, qworker, runs):
    queue.enqueue("report", {"n": 1}, job_id="daily")
    worker = qworker()
    worker.register("report", runs.add)
    assert worker.drain(5)
    queue.enqueue("report", {"n": 2}, job_id="daily")
    assert worker.drain(5)
    assert [r["args"]["n"] for r in runs.snapshot()] == [1, 2]


def test_a_dead_job_keeps_its_id(queue, qworker, runs):
    worker = qworker()

    @worker.handler("fragile", max_fails=1)
    def fragile(job):
        runs.add(job)
        raise RuntimeError("no")

    queue.enqueue("fragile", job_id="f1")
    assert worker.drain(5)
    again = queue.enqueue("fragile", job_id="f1")
    assert again.died_at is not None and again.fails == 1
    assert info(queue, "fragile").ready == 0 and len(runs) == 1


@pytest.mark.parametrize("bad", ["", "a|b", "x" * 257])
def test_a_bad_job_id_is_a_value_error(queue, bad):
    with pytest.raises(ValueError, match="job_id"):
        queue.enqueue("report", job_id=bad)


def test_a_job_id_must_be_a_str(queue):
    with pytest.raises(TypeError, match="job_id"):
        queue.enqueue("report", job_id=7)  # type: ignore[arg-type]
