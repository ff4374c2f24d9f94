"""How a queued run ends decides what happens to its job (README "Outcomes"): complete, fail
(retry with backoff, dead after max_fails or deleted with skip_dead), Result.retry/dead/reschedule,
ArgError, timeouts; and the statuses adapters see for each. memory:// and redis://."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from queue_fixtures import *  # noqa: F403
from queue_fixtures import info, settle
from support import status_observer

import workhorse as wh

pytestmark = pytest.mark.timeout(30)

QUICK = {"backoff": lambda job: 0.05}  # retries due at once instead of gocraft's 16+ s
SLOW = {"backoff": lambda job: 60}  # a retry that stays in the retry set for the test


def counts(queue, name):
    q = info(queue, name)
    if q is None:
        return (0, 0, 0, 0, 0)
    return (q.ready, q.scheduled, q.retry, q.dead, q.running)


def gone(queue, name):
    return counts(queue, name) == (0, 0, 0, 0, 0)


def one_dead(queue):
    page = queue.client.dead_jobs()
    return page.jobs[0] if page.total == 1 and len(page.jobs) == 1 else None


def one_retry(queue):
    page = queue.client.retry_jobs()
    return page.jobs[0] if page.total == 1 and len(page.jobs) == 1 else None


def one_scheduled(queue):
    page = queue.client.scheduled_jobs()
    return page.jobs[0] if page.total == 1 and len(page.jobs) == 1 else None


# -- completing ------------------------------------------------------------------------------


@pytest.mark.parametrize("returns", [None, "complete"])
def test_returning_none_or_result_complete_completes_the_job(queue, qworker, runs, returns):
    worker = qworker()

    @worker.handler("done")
    def done(job):
        runs.add(job)
        return wh.Result.complete() if returns == "complete" else None

    queue.enqueue("done", {"n": 1})
    assert worker.drain(5)
    assert len(runs) == 1
    assert settle(lambda: gone(queue, "done")), counts(queue, "done")
    stats = queue.client.stats()
    assert stats["processed"] == 1
    assert stats["failed"] == 0 and stats["dead"] == 0
    time.sleep(0.2)
    assert len(runs) == 1  # and it does not come back


# -- failing ---------------------------------------------------------------------------------


def test_an_exception_puts_the_job_in_the_retry_set_with_its_error(queue, qworker, runs):
    worker = qworker()

    @worker.handler("flaky", **SLOW)
    def flaky(job):
        runs.add(job)
        raise ValueError("smtp said no")

    queued = queue.enqueue("flaky", {"to": "a@b.c"})
    worker.start()
    failed_at = time.time()
    retry = settle(lambda: one_retry(queue))
    assert retry, queue.client.retry_jobs()
    assert retry.id == queued.id
    assert retry.args == {"to": "a@b.c"}
    assert retry.fails == 1
    assert "smtp said no" in retry.last_error
    assert retry.run_at == pytest.approx(failed_at + 60, abs=3)
    assert counts(queue, "flaky")[:4] == (0, 0, 1, 0)
    assert len(runs) == 1


def test_a_failed_job_goes_to_retry_then_dead_after_max_fails(queue, qworker, runs):
    worker = qworker()

    @worker.handler("flaky", max_fails=3, **QUICK)
    def flaky(job):
        runs.add(job)
        raise RuntimeError(f"failure number {job.fails + 1}")

    queued = queue.enqueue("flaky", {"n": 1})
    worker.start()
    dead = settle(lambda: one_dead(queue))
    assert dead, queue.client.dead_jobs()
    assert [r["fails"] for r in runs.snapshot()] == [0, 1, 2]
    assert dead.id == queued.id
    assert dead.fails == 3
    assert "failure number 3" in dead.reason
    assert dead.died_at == pytest.approx(time.time(), abs=3)
    assert dead.args == {"n": 1}
    assert queue.client.retry_jobs().total == 0
    assert counts(queue, "flaky")[:4] == (0, 0, 0, 1)
    stats = queue.client.stats()
    assert stats["dead"] == 1
    assert stats["failed"] >= 2
    time.sleep(0.3)
    assert len(runs) == 3  # a dead job is not run again


def test_max_fails_1_sends_a_failing_job_dead_on_its_first_failure(queue, qworker, runs):
    worker = qworker()

    @worker.handler("once", max_fails=1, **QUICK)
    def once(job):
        runs.add(job)
        raise RuntimeError("no second chance")

    queue.enqueue("once")
    worker.start()
    assert settle(lambda: one_dead(queue))
    assert len(runs) == 1
    assert queue.client.retry_jobs().total == 0


def test_the_default_max_fails_is_4(queue, qworker, runs):
    worker = qworker()

    @worker.handler("flaky", **QUICK)
    def flaky(job):
        runs.add(job)
        raise RuntimeError("again")

    queue.enqueue("flaky")
    worker.start()
    assert settle(lambda: one_dead(queue))
    assert len(runs) == 4


def test_skip_dead_deletes_a_job_that_used_up_its_fails(queue, qworker, runs):
    worker = qworker()

    @worker.handler("flaky", max_fails=2, skip_dead=True, **QUICK)
    def flaky(job):
        runs.add(job)
        raise RuntimeError("drop me")

    queue.enqueue("flaky")
    worker.start()
    assert runs.wait_for(2, 5)
    assert settle(lambda: gone(queue, "flaky")), counts(queue, "flaky")
    assert queue.client.dead_jobs().total == 0
    time.sleep(0.3)
    assert len(runs) == 2


def test_the_handler_sees_fails_and_last_error_of_earlier_runs(queue, qworker, runs):
    worker = qworker()

    @worker.handler("flaky", max_fails=5, **QUICK)
    def flaky(job):
        runs.add(job, queue=job.queue, enqueued_at=job.enqueued_at)
        if job.fails < 2:
            raise KeyError(f"missing piece {job.fails}")

    queued = queue.enqueue("flaky", {"k": "v"})
    worker.start()
    assert runs.wait_for(3, 5)
    assert settle(lambda: gone(queue, "flaky"))
    seen = runs.snapshot()
    assert [r["fails"] for r in seen] == [0, 1, 2]
    assert seen[0]["last_error"] is None
    assert "missing piece 0" in seen[1]["last_error"]
    assert "missing piece 1" in seen[2]["last_error"]
    for r in seen:
        assert r["id"] == queued.id
        assert r["name"] == r["queue"] == "flaky"
        assert r["args"] == {"k": "v"}
        assert r["enqueued_at"] == pytest.approx(queued.enqueued_at, abs=0.01)
    time.sleep(0.2)
    assert len(runs) == 3


def test_the_backoff_callable_gets_the_job_and_sets_the_retry_delay(queue, qworker):
    asked = []
    worker = qworker()

    def backoff(job):
        asked.append((job.id, job.fails))
        return 40

    @worker.handler("flaky", backoff=backoff)
    def flaky(job):
        raise RuntimeError("later")

    queued = queue.enqueue("flaky")
    worker.start()
    failed_at = time.time()
    retry = settle(lambda: one_retry(queue))
    assert retry
    assert retry.run_at == pytest.approx(failed_at + 40, abs=3)
    assert [jid for jid, _ in asked] == [queued.id]


def test_the_default_backoff_follows_gocrafts_curve(queue, qworker):
    # First failure: fails = 1 -> 1**4 + 15 + rand(30) * 2, i.e. 16 to 74 seconds.
    worker = qworker()

    @worker.handler("flaky")
    def flaky(job):
        raise RuntimeError("later")

    queue.enqueue("flaky")
    worker.start()
    started = time.time()
    retry = settle(lambda: one_retry(queue))
    assert retry
    delay = retry.run_at - started
    assert 16 - 2 <= delay <= 74 + 3, delay


def test_the_default_backoff_has_jitter(open_queue):
    # Ten jobs failing once each get retry times spread over tens of seconds, not one time.
    queue = open_queue()
    worker = wh.Worker(concurrency=4, queue=queue, grace=1.0)

    @worker.handler("flaky")
    def flaky(job):
        raise RuntimeError("later")

    try:
        queue.enqueue_many([("flaky", {"i": i}) for i in range(10)])
        worker.start()
        assert settle(lambda: queue.client.retry_jobs().total == 10)
        times = [j.run_at for j in queue.client.retry_jobs().jobs]
        assert max(times) - min(times) > 2.0, times
    finally:
        worker.stop(3)


# -- results ---------------------------------------------------------------------------------


def test_result_retry_is_a_failure_with_its_own_delay(queue, qworker, runs):
    worker = qworker()

    @worker.handler("busy", **SLOW)
    def busy(job):
        runs.add(job)
        return wh.Result.retry(after=25)

    queued = queue.enqueue("busy", {"n": 1})
    worker.start()
    returned_at = time.time()
    retry = settle(lambda: one_retry(queue))
    assert retry
    assert retry.id == queued.id
    assert retry.fails == 1
    assert retry.run_at == pytest.approx(returned_at + 25, abs=3)


def test_result_retry_counts_toward_max_fails(queue, qworker, runs):
    worker = qworker()

    @worker.handler("busy", max_fails=2, **SLOW)
    def busy(job):
        runs.add(job)
        return wh.Result.retry(after=0.05)

    queue.enqueue("busy")
    worker.start()
    dead = settle(lambda: one_dead(queue))
    assert dead
    assert [r["fails"] for r in runs.snapshot()] == [0, 1]
    assert dead.fails == 2


def test_result_retry_takes_a_timedelta(queue, qworker):
    import datetime as dt

    worker = qworker()

    @worker.handler("busy", **SLOW)
    def busy(job):
        return wh.Result.retry(after=dt.timedelta(seconds=45))

    queue.enqueue("busy")
    worker.start()
    returned_at = time.time()
    retry = settle(lambda: one_retry(queue))
    assert retry and retry.run_at == pytest.approx(returned_at + 45, abs=3)


def test_result_dead_sends_the_job_dead_at_once_with_its_reason(queue, qworker, runs):
    worker = qworker()

    @worker.handler("hopeless", max_fails=10, **QUICK)
    def hopeless(job):
        runs.add(job)
        return wh.Result.dead("account closed")

    queued = queue.enqueue("hopeless", {"user": 7})
    worker.start()
    dead = settle(lambda: one_dead(queue))
    assert dead
    assert dead.id == queued.id
    assert dead.args == {"user": 7}
    assert "account closed" in dead.reason
    assert dead.died_at == pytest.approx(time.time(), abs=3)
    time.sleep(0.2)
    assert len(runs) == 1
    assert queue.client.retry_jobs().total == 0


def test_an_arg_error_sends_the_job_dead_at_once(queue, qworker, runs):
    worker = qworker()

    @worker.handler("typed", max_fails=10, **QUICK)
    def typed(job):
        runs.add(job)
        job.arg_int("count")

    queue.enqueue("typed", {"count": "three"})
    worker.start()
    dead = settle(lambda: one_dead(queue))
    assert dead
    assert "count" in dead.reason
    time.sleep(0.2)
    assert len(runs) == 1
    assert queue.client.retry_jobs().total == 0


def test_raising_arg_error_directly_sends_the_job_dead(queue, qworker, runs):
    worker = qworker()

    @worker.handler("typed", max_fails=10, **QUICK)
    def typed(job):
        runs.add(job)
        raise wh.ArgError("to must be an address")

    queue.enqueue("typed", {"to": 5})
    worker.start()
    dead = settle(lambda: one_dead(queue))
    assert dead and "to must be an address" in dead.reason
    assert len(runs) == 1


def test_result_reschedule_after_is_not_a_failure_and_replaces_args(queue, qworker, runs):
    worker = qworker()

    @worker.handler("poll", max_fails=1, **QUICK)
    def poll(job):
        runs.add(job)
        if job.args["n"] == 1:
            return wh.Result.reschedule(after=0.3, args={"n": 2})
        return None

    queue.enqueue("poll", {"n": 1})
    worker.start()
    assert runs.wait_for(2, 5)
    first, second = runs.snapshot()[:2]
    assert first["args"] == {"n": 1}
    assert second["args"] == {"n": 2}
    assert second["fails"] == 0
    assert second["last_error"] is None
    assert second["mono"] - first["mono"] >= 0.3 - 0.02
    assert settle(lambda: gone(queue, "poll"))
    assert queue.client.stats()["failed"] == 0
    assert queue.client.dead_jobs().total == 0


def test_a_rescheduled_job_waits_in_the_scheduled_set_with_fails_unchanged(
    queue, qworker, runs
):
    worker = qworker()

    @worker.handler("poll", max_fails=5, **QUICK)
    def poll(job):
        runs.add(job)
        if job.fails == 0:
            raise RuntimeError("first run fails")
        return wh.Result.reschedule(after=60)

    queue.enqueue("poll", {"keep": "me"})
    worker.start()
    returned_at = time.time()
    scheduled = settle(lambda: one_scheduled(queue))
    assert scheduled, queue.client.scheduled_jobs()
    assert scheduled.fails == 1  # the earlier failure stays, the reschedule adds none
    assert scheduled.args == {"keep": "me"}  # no args given: kept
    assert scheduled.run_at == pytest.approx(returned_at + 60, abs=3)
    assert counts(queue, "poll")[:4] == (0, 1, 0, 0)


def test_result_reschedule_by_cron_runs_at_the_next_slot(queue, qworker, runs):
    worker = qworker()

    @worker.handler("tick")
    def tick(job):
        runs.add(job)
        if len(runs) < 3:
            return wh.Result.reschedule(cron="* * * * * *")
        return None

    queue.enqueue("tick")
    worker.start()
    assert runs.wait_for(3, 6)
    seen = runs.snapshot()
    # Each rescheduled run starts on a later second than the one before.
    assert int(seen[1]["at"]) > int(seen[0]["at"])
    assert int(seen[2]["at"]) > int(seen[1]["at"])
    assert seen[2]["at"] - seen[0]["at"] < 3.5


def test_a_cron_rescheduled_job_is_scheduled_for_the_next_slot(queue, qworker):
    worker = qworker()

    @worker.handler("tick")
    def tick(job):
        return wh.Result.reschedule(cron="0 0 0 1 1 *")  # next New Year, UTC

    queue.enqueue("tick")
    worker.start()
    scheduled = settle(lambda: one_scheduled(queue))
    assert scheduled
    import datetime as dt

    run_at = dt.datetime.fromtimestamp(scheduled.run_at, dt.timezone.utc)
    assert (run_at.month, run_at.day, run_at.hour, run_at.minute, run_at.second) == (
        1,
        1,
        0,
        0,
        0,
    )
    assert scheduled.run_at > time.time()


def test_a_timeout_is_a_failure(queue, qworker, runs):
    worker = qworker()

    @worker.handler("slow", timeout=0.2, **SLOW)
    def slow(job):
        runs.add(job)
        job.ctx.wait_cancelled(5)

    queue.enqueue("slow")
    worker.start()
    started = time.monotonic()
    retry = settle(lambda: one_retry(queue))
    assert retry
    assert retry.fails == 1
    assert time.monotonic() - started < 3
    assert len(runs) == 1


def test_an_async_timeout_is_a_failure(queue, qworker):
    worker = qworker()

    @worker.handler("slow", timeout=0.2, max_fails=1, **QUICK)
    async def slow(job):
        await asyncio.sleep(10)

    queue.enqueue("slow")
    worker.start()
    assert settle(lambda: one_dead(queue))


def test_exceptions_never_stop_the_worker(queue, qworker, runs):
    worker = qworker(concurrency=2)

    @worker.handler("bad", max_fails=1, **QUICK)
    def bad(job):
        raise SystemError("broken")

    @worker.handler("good")
    def good(job):
        runs.add(job)

    queue.enqueue_many([("bad", None)] * 5 + [("good", {"i": i}) for i in range(5)])
    worker.start()
    assert runs.wait_for(5, 5)
    assert settle(lambda: queue.client.dead_jobs().total == 5)


# -- async handlers --------------------------------------------------------------------------


def test_async_handlers_complete_fail_and_die_like_sync_ones(queue, qworker, runs):
    worker = qworker()

    @worker.handler("a_ok")
    async def a_ok(job):
        await asyncio.sleep(0.01)
        runs.add(job)

    @worker.handler("a_fail", **SLOW)
    async def a_fail(job):
        await asyncio.sleep(0.01)
        raise RuntimeError("async boom")

    @worker.handler("a_dead")
    async def a_dead(job):
        return wh.Result.dead("async gave up")

    @worker.handler("a_resched")
    async def a_resched(job):
        return wh.Result.reschedule(after=60, args={"v": 2})

    queue.enqueue("a_ok", {"v": 1})
    queue.enqueue("a_fail")
    queue.enqueue("a_dead")
    queue.enqueue("a_resched", {"v": 1})
    worker.start()
    assert runs.wait_for(1, 5)
    retry = settle(lambda: one_retry(queue))
    assert retry and "async boom" in retry.last_error
    dead = settle(lambda: one_dead(queue))
    assert dead and "async gave up" in dead.reason
    scheduled = settle(lambda: one_scheduled(queue))
    assert scheduled and scheduled.args == {"v": 2} and scheduled.fails == 0
    assert settle(lambda: gone(queue, "a_ok"))


# -- statuses adapters see -------------------------------------------------------------------


def _raise(exc):
    raise exc


OUTCOMES = [
    pytest.param(lambda job: None, wh.Status.SUCCESS, id="none-200"),
    pytest.param(lambda job: wh.Result.complete(), wh.Status.SUCCESS, id="complete-200"),
    pytest.param(lambda job: wh.Result.reschedule(after=60), wh.Status.SUCCESS, id="resched-200"),
    pytest.param(lambda job: _raise(RuntimeError("x")), wh.Status.INTERNAL_ERROR, id="raise-500"),
    pytest.param(lambda job: _raise(wh.ArgError("x")), wh.Status.BAD_REQUEST, id="argerror-400"),
    pytest.param(lambda job: wh.Result.retry(after=60), wh.Status.UNAVAILABLE, id="retry-503"),
    pytest.param(lambda job: wh.Result.dead("x"), wh.Status.INTERNAL_ERROR, id="dead-500"),
    pytest.param(lambda job: job.ctx.wait_cancelled(5), wh.Status.TIMEOUT, id="timeout-408"),
]


@pytest.mark.parametrize(("handler", "status"), OUTCOMES)
def test_adapters_see_the_status_of_each_outcome(queue, qworker, handler, status):
    seen: list[wh.Status] = []
    worker = qworker(adapters=[status_observer(seen)])
    worker.handler("job", timeout=0.2, **SLOW)(handler)
    queue.enqueue("job")
    worker.start()
    assert settle(lambda: len(seen) >= 1)
    assert seen == [status]


@pytest.mark.parametrize(("handler", "status"), OUTCOMES[:7])
def test_adapters_see_the_status_of_each_outcome_of_async_handlers(
    queue, qworker, handler, status
):
    seen: list[wh.Status] = []
    worker = qworker(adapters=[status_observer(seen)])

    async def ahandler(job):
        return handler(job)

    worker.handler("job", **SLOW)(ahandler)
    queue.enqueue("job")
    worker.start()
    assert settle(lambda: len(seen) >= 1)
    assert seen == [status]


def test_adapters_added_with_use_wrap_queued_jobs(queue, qworker):
    seen: list[wh.Status] = []
    names: list[str] = []
    worker = qworker()

    def record_queue(next_handler):
        def wrapped(job):
            names.append(job.queue)
            return next_handler(job)

        return wrapped

    worker.use(status_observer(seen), record_queue)
    worker.register("mail", lambda job: None)
    queue.enqueue("mail")
    assert worker.drain(5)
    assert settle(lambda: seen == [wh.Status.SUCCESS])
    assert names == ["mail"]


def test_a_handler_running_in_a_thread_sees_its_own_job(queue, qworker):
    # Concurrent runs keep their jobs apart: each sees its own args and id.
    seen = {}
    lock = threading.Lock()
    worker = qworker(concurrency=4)

    @worker.handler("each")
    def each(job):
        time.sleep(0.01)
        with lock:
            seen[job.id] = job.args["i"]

    jobs = queue.enqueue_many([("each", {"i": i}) for i in range(40)])
    assert worker.drain(10)
    assert seen == {j.id: j.args["i"] for j in jobs}
