"""Worker: registration, perform (sync and async), status rules, adapters, concurrency, stop."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time

import pytest
from support import status_observer

import workhorse as wh

pytestmark = pytest.mark.timeout(10)


# -- registration --------------------------------------------------------------------------------


def test_handler_decorator_registers_and_returns_the_function(worker):
    @worker.handler("double")
    def double(job):
        job.ctx.set("out", job.arg_int("n") * 2)

    assert double.__name__ == "double"
    job = wh.Job("double", {"n": 21})
    assert worker.perform(job, sync=True) is wh.Status.SUCCESS
    assert job.ctx.get("out") == 42


def test_register_by_name(worker):
    worker.register("noop", lambda job: None)
    assert worker.perform(wh.Job("noop"), sync=True) is wh.Status.SUCCESS


# -- perform: sync -------------------------------------------------------------------------------


def test_perform_sync_returns_success_for_a_handler_that_returns(worker):
    worker.register("ok", lambda job: "ignored")
    assert worker.perform(wh.Job("ok"), sync=True) is wh.Status.SUCCESS


def test_perform_sync_reraises_the_handler_exception_and_records_it(worker):
    boom = RuntimeError("boom")

    def fail(job):
        raise boom

    worker.register("fail", fail)
    job = wh.Job("fail")
    with pytest.raises(RuntimeError, match="boom"):
        worker.perform(job, sync=True)
    assert job.ctx.status is wh.Status.INTERNAL_ERROR
    assert job.ctx.error is boom


def test_perform_sync_reraises_arg_error_with_bad_request(worker):
    worker.register("needs_id", lambda job: job.arg_int("id"))
    job = wh.Job("needs_id", {"id": "seven"})
    with pytest.raises(wh.ArgError, match="'id'"):
        worker.perform(job, sync=True)
    assert job.ctx.status is wh.Status.BAD_REQUEST


def test_perform_sync_keeps_a_status_the_handler_set(worker):
    worker.register("quiet", lambda job: job.ctx.set_status(wh.Status.NO_RESPONSE))
    assert worker.perform(wh.Job("quiet"), sync=True) is wh.Status.NO_RESPONSE


def test_perform_sync_works_before_start(make_worker):
    worker = make_worker()
    worker.register("ok", lambda job: None)
    assert worker.perform(wh.Job("ok"), sync=True) is wh.Status.SUCCESS


# -- perform: async (Execution) ------------------------------------------------------------------


def test_perform_returns_an_execution_that_resolves_to_success(worker):
    release = threading.Event()
    worker.register("gate", lambda job: release.wait(2))
    execution = worker.perform(wh.Job("gate"))
    assert isinstance(execution, wh.Execution)
    assert not execution.done()
    assert execution.status is wh.Status.UNKNOWN
    release.set()
    assert execution.wait(2) is wh.Status.SUCCESS
    assert execution.done()
    assert execution.status is wh.Status.SUCCESS
    assert execution.error is None


def test_execution_wait_never_raises_the_handler_error(worker):
    def fail(job):
        raise KeyError("nope")

    worker.register("fail", fail)
    execution = worker.perform(wh.Job("fail"))
    assert execution.wait(2) is wh.Status.INTERNAL_ERROR
    assert isinstance(execution.error, KeyError)


def test_execution_wait_with_timeout_returns_unknown_while_still_running(worker):
    release = threading.Event()
    worker.register("gate", lambda job: release.wait(2))
    execution = worker.perform(wh.Job("gate"))
    start = time.monotonic()
    assert execution.wait(0.02) is wh.Status.UNKNOWN
    assert time.monotonic() - start < 1.0
    release.set()
    assert execution.wait(2) is wh.Status.SUCCESS


def test_perform_starts_a_worker_that_was_not_started(make_worker):
    worker = make_worker()
    worker.register("ok", lambda job: None)
    assert worker.perform(wh.Job("ok")).wait(2) is wh.Status.SUCCESS


def test_handler_runs_off_the_calling_thread(worker):
    worker.register("where", lambda job: job.ctx.set("thread", threading.get_ident()))
    job = wh.Job("where")
    worker.perform(job).wait(2)
    assert job.ctx.get("thread") not in (None, threading.get_ident())


def test_values_set_on_the_context_before_perform_reach_the_handler(worker):
    seen = []
    worker.register("read", lambda job: seen.append(job.ctx.get("request_id")))
    job = wh.Job("read")
    job.ctx.set("request_id", "r-1")
    worker.perform(job).wait(2)
    assert seen == ["r-1"]


def test_each_execution_gets_a_new_context_with_unknown_status(worker):
    contexts = []

    def handler(job):
        contexts.append((job.ctx, job.ctx.status))

    worker.register("h", handler)
    job = wh.Job("h")
    worker.perform(job).wait(2)
    worker.perform(job).wait(2)
    (first, s1), (second, s2) = contexts
    assert first is not second
    assert s1 is s2 is wh.Status.UNKNOWN


def test_context_carries_the_worker_session(make_worker):
    session = wh.Session({"pool": "db"})
    worker = make_worker(session=session).start()
    seen = []
    worker.register("h", lambda job: seen.append((job.ctx.session, job.ctx.session.get("pool"))))
    worker.perform(wh.Job("h")).wait(2)
    assert seen == [(session, "db")]
    assert worker.session is session


def test_handlers_share_the_session_across_executions(worker):
    def count(job):
        session = job.ctx.session
        session.set("n", (session.get("n") or 0) + 1)

    worker.register("count", count)
    for _ in range(3):
        worker.perform(wh.Job("count"), sync=False).wait(2)
    assert worker.session.get("n") == 3


# -- status rules --------------------------------------------------------------------------------


def test_raising_after_setting_an_error_status_keeps_that_status(worker):
    def deny(job):
        job.ctx.set_status(wh.Status.FORBIDDEN)
        raise PermissionError("no")

    worker.register("deny", deny)
    execution = worker.perform(wh.Job("deny"))
    assert execution.wait(2) is wh.Status.FORBIDDEN
    assert isinstance(execution.error, PermissionError)


def test_raising_after_setting_a_success_status_becomes_internal_error(worker):
    def flip(job):
        job.ctx.set_status(wh.Status.SUCCESS)
        raise RuntimeError("late failure")

    worker.register("flip", flip)
    assert worker.perform(wh.Job("flip")).wait(2) is wh.Status.INTERNAL_ERROR


def test_arg_error_from_a_handler_is_bad_request(worker):
    worker.register("h", lambda job: job.arg_str("name"))
    execution = worker.perform(wh.Job("h"))
    assert execution.wait(2) is wh.Status.BAD_REQUEST
    assert isinstance(execution.error, wh.ArgError)


def test_handler_error_is_logged(worker, caplog):
    def fail(job):
        raise RuntimeError("logged failure")

    worker.register("fail", fail)
    with caplog.at_level("ERROR", logger="workhorse"):
        worker.perform(wh.Job("fail")).wait(2)
    assert any("logged failure" in r.getMessage() for r in caplog.records)


# -- adapters ------------------------------------------------------------------------------------


def _tracing(name, trail):
    def adapter(next_handler):
        def handler(job):
            trail.append(f"{name}>")
            try:
                return next_handler(job)
            finally:
                trail.append(f"<{name}:{int(job.ctx.status)}")

        return handler

    return adapter


def test_worker_adapters_wrap_outside_the_handlers_own(make_worker):
    trail = []
    worker = make_worker(adapters=[_tracing("w1", trail)])
    worker.use(_tracing("w2", trail))
    worker.register("h", wh.adapt(lambda job: trail.append("handler"), _tracing("own", trail)))
    worker.perform(wh.Job("h"), sync=True)
    order = [step.split(":")[0] for step in trail]
    assert order == ["w2>", "w1>", "own>", "handler", "<own", "<w1", "<w2"]


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        ("return", wh.Status.SUCCESS),
        ("raise", wh.Status.INTERNAL_ERROR),
        ("arg_error", wh.Status.BAD_REQUEST),
        ("set_403_and_raise", wh.Status.FORBIDDEN),
    ],
)
def test_every_adapter_sees_the_final_status_on_the_way_out(make_worker, behaviour, expected):
    seen = []

    observe = status_observer(seen)

    def handler(job):
        if behaviour == "raise":
            raise RuntimeError("x")
        if behaviour == "arg_error":
            job.arg_int("missing")
        if behaviour == "set_403_and_raise":
            job.ctx.set_status(403)
            raise RuntimeError("x")

    worker = make_worker(adapters=[observe, observe]).start()
    worker.register("h", handler)
    assert worker.perform(wh.Job("h")).wait(2) is expected
    assert seen == [expected, expected]


@dataclasses.dataclass
class _ObservedByDataclass:
    """A class-based adapter's handler; a dataclass with eq is unhashable."""

    next_handler: object
    seen: list

    def __call__(self, job):
        try:
            return self.next_handler(job)
        finally:
            self.seen.append(job.ctx.status)


class _ObservedBySlots:
    """A class-based adapter's handler with __slots__: no weak references to it."""

    __slots__ = ("next_handler", "seen")

    def __init__(self, next_handler, seen):
        self.next_handler, self.seen = next_handler, seen

    def __call__(self, job):
        try:
            return self.next_handler(job)
        finally:
            self.seen.append(job.ctx.status)


@pytest.mark.parametrize("observed", [_ObservedByDataclass, _ObservedBySlots])
@pytest.mark.parametrize("applied_with", ["adapt", "worker"])
def test_class_based_adapters_see_the_final_status_however_applied(
    make_worker, observed, applied_with
):
    seen = []

    def observe(next_handler):
        return observed(next_handler, seen)

    def fails(job):
        raise ValueError("boom")

    def succeeds(job):
        pass

    if applied_with == "adapt":
        worker = make_worker(concurrency=1).start()
        worker.register("fails", wh.adapt(fails, observe))
        worker.register("ok", wh.adapt(succeeds, observe))
    else:
        worker = make_worker(concurrency=1, adapters=[observe]).start()
        worker.register("fails", fails)
        worker.register("ok", succeeds)
    assert worker.perform(wh.Job("fails")).wait(2) is wh.Status.INTERNAL_ERROR
    assert worker.perform(wh.Job("ok"), sync=True) is wh.Status.SUCCESS
    assert seen == [wh.Status.INTERNAL_ERROR, wh.Status.SUCCESS]


def test_adapter_that_raises_marks_the_execution_internal_error(worker):
    def broken(next_handler):
        def handler(job):
            raise RuntimeError("adapter bug")

        return handler

    worker.use(broken)
    worker.register("h", lambda job: None)
    execution = worker.perform(wh.Job("h"))
    assert execution.wait(2) is wh.Status.INTERNAL_ERROR
    assert "adapter bug" in str(execution.error)


def test_adapter_can_short_circuit_with_a_status(worker):
    ran = []

    def deny_all(next_handler):
        def handler(job):
            job.ctx.set_status(wh.Status.UNAUTHORIZED)

        return handler

    worker.use(deny_all)
    worker.register("h", lambda job: ran.append(1))
    assert worker.perform(wh.Job("h")).wait(2) is wh.Status.UNAUTHORIZED
    assert ran == []


def test_use_after_a_first_perform_applies_to_later_performs(worker):
    trail = []
    worker.register("h", lambda job: None)
    worker.perform(wh.Job("h"), sync=True)
    worker.use(_tracing("late", trail))
    worker.perform(wh.Job("h"), sync=True)
    assert trail == ["late>", "<late:200"]


# -- concurrency ---------------------------------------------------------------------------------


def test_concurrency_bounds_executions_in_flight(make_worker, tracker, wait_until):
    worker = make_worker(concurrency=3).start()
    release = threading.Event()

    def hold(job):
        with tracker.running():
            release.wait(2)

    worker.register("hold", hold)
    executions = [worker.perform(wh.Job("hold")) for _ in range(8)]
    assert wait_until(lambda: tracker.active == 3)
    time.sleep(0.05)  # give a fourth run the chance to (wrongly) start
    assert tracker.max_active == 3
    assert worker.running == 3
    release.set()
    assert all(e.wait(2) is wh.Status.SUCCESS for e in executions)
    assert wait_until(lambda: worker.running == 0)


def test_concurrency_one_runs_executions_one_at_a_time(make_worker, tracker):
    worker = make_worker(concurrency=1).start()

    def work(job):
        with tracker.running():
            time.sleep(0.002)

    worker.register("work", work)
    executions = [worker.perform(wh.Job("work")) for _ in range(20)]
    assert all(e.wait(2) is wh.Status.SUCCESS for e in executions)
    assert tracker.max_active == 1


def test_concurrency_is_shared_by_sync_and_async_handlers(make_worker, wait_until, tracker):
    worker = make_worker(concurrency=2).start()
    release = threading.Event()

    async def hold(job):
        while not release.is_set():
            await asyncio.sleep(0.002)

    worker.register("hold", hold)
    worker.register("plain", lambda job: tracker.add("ran"))
    held = [worker.perform(wh.Job("hold")) for _ in range(2)]
    assert wait_until(lambda: worker.running == 2)
    plain = worker.perform(wh.Job("plain"))
    time.sleep(0.05)
    assert tracker.count == 0, "a plain handler ran while async handlers held every permit"
    release.set()
    assert plain.wait(2) is wh.Status.SUCCESS
    assert all(e.wait(2) is wh.Status.SUCCESS for e in held)


def test_many_threads_can_perform_at_once(make_worker):
    worker = make_worker(concurrency=8).start()
    counter = []
    lock = threading.Lock()

    def add(job):
        with lock:
            counter.append(job.args["i"])

    worker.register("add", add)
    results = []

    def client(base):
        for i in range(50):
            results.append(worker.perform(wh.Job("add", {"i": base + i})))

    threads = [threading.Thread(target=client, args=(n * 100,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert all(e.wait(2) is wh.Status.SUCCESS for e in results)
    assert sorted(counter) == sorted(n * 100 + i for n in range(6) for i in range(50))


# -- stats ---------------------------------------------------------------------------------------


def test_stats_count_executions_by_status(worker, wait_until):
    worker.register("ok", lambda job: None)
    worker.register("bad", lambda job: job.arg_int("x"))
    for _ in range(3):
        worker.perform(wh.Job("ok")).wait(2)
    worker.perform(wh.Job("bad")).wait(2)
    assert wait_until(lambda: worker.stats()["completed"] == 4)
    stats = worker.stats()
    assert stats["by_status"] == {200: 3, 400: 1}
    assert stats["in_flight"] == 0


def test_stats_report_in_flight_and_scheduled(worker, wait_until):
    release = threading.Event()
    worker.register("gate", lambda job: release.wait(2))
    worker.register("ok", lambda job: None)
    execution = worker.perform(wh.Job("gate"))
    schedule = worker.perform_in(wh.Job("ok"), 60)
    assert wait_until(lambda: worker.stats()["in_flight"] == 1)
    assert worker.stats()["scheduled"] == 1
    schedule.cancel()
    release.set()
    execution.wait(2)
    assert wait_until(lambda: worker.stats()["scheduled"] == 0 and worker.running == 0)


# -- lifecycle -----------------------------------------------------------------------------------


def test_start_is_idempotent_and_returns_the_worker(make_worker):
    worker = make_worker()
    assert worker.start() is worker
    assert worker.start() is worker


def test_wait_returns_false_on_timeout_and_true_once_stopped(make_worker):
    worker = make_worker().start()
    assert worker.wait(0.01) is False
    assert worker.failed is None
    threading.Timer(0.05, worker.stop).start()
    assert worker.wait(5) is True
    assert worker.wait(0) is True  # and stays so


def test_context_manager_starts_and_stops(make_worker):
    worker = make_worker()
    worker.register("ok", lambda job: None)
    with worker as started:
        assert started is worker
        assert worker.perform(wh.Job("ok")).wait(2) is wh.Status.SUCCESS
    with pytest.raises(wh.WorkerStopped):
        worker.perform(wh.Job("ok"))


def test_stop_waits_for_running_handlers(make_worker):
    worker = make_worker().start()
    started, finished = threading.Event(), []

    def slow(job):
        started.set()
        time.sleep(0.05)
        finished.append(1)

    worker.register("slow", slow)
    execution = worker.perform(wh.Job("slow"))
    assert started.wait(2)
    assert worker.stop(timeout=2) is True
    assert finished == [1]
    assert execution.status is wh.Status.SUCCESS


def test_stop_twice_is_harmless(make_worker):
    worker = make_worker().start()
    assert worker.stop(timeout=1) is True
    assert worker.stop(timeout=1) is True


def test_stopped_worker_cannot_be_restarted(make_worker):
    worker = make_worker().start()
    worker.stop(timeout=1)
    with pytest.raises(wh.WorkerStopped):
        worker.start()


def test_stop_leaves_no_threads_of_the_worker_behind(make_worker, wait_until):
    worker = make_worker(concurrency=4, name="leakcheck")

    async def coro(job):
        await asyncio.sleep(0.001)

    worker.register("plain", lambda job: time.sleep(0.001))
    worker.register("coro", coro)
    worker.start()
    executions = [worker.perform(wh.Job("plain")) for _ in range(8)]
    executions += [worker.perform(wh.Job("coro")) for _ in range(4)]
    assert all(e.wait(2) is wh.Status.SUCCESS for e in executions)

    def ours():
        return [t.name for t in threading.enumerate() if t.name.startswith("leakcheck")]

    assert ours(), "expected the worker to run named threads"
    assert worker.stop(timeout=2)
    assert wait_until(lambda: not ours(), timeout=2), ours()


def test_workers_are_independent(make_worker, wait_until):
    a = make_worker(concurrency=1).start()
    b = make_worker(concurrency=1).start()
    started, release = threading.Event(), threading.Event()
    a.register("h", lambda job: (started.set(), release.wait(2)))
    b.register("h", lambda job: None)
    blocked = a.perform(wh.Job("h"))
    assert started.wait(2)
    assert b.perform(wh.Job("h")).wait(2) is wh.Status.SUCCESS
    a.stop(timeout=0.01)
    assert b.perform(wh.Job("h")).wait(2) is wh.Status.SUCCESS
    release.set()
    assert blocked.wait(2) is wh.Status.SUCCESS


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_runs_its_own_worker(worker, wait_until):
    worker.register("ok", lambda job: None)
    assert worker.perform(wh.Job("ok")).wait(2) is wh.Status.SUCCESS
    ticking = worker.perform_every(wh.Job("ok"), 0.01)  # the parent's core has live threads
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            child = wh.Worker(concurrency=2)
            runs = []
            child.register("ok", lambda job: runs.append(1))
            child.start()
            every = child.perform_every(wh.Job("ok"), 0.01)
            ok = child.perform(wh.Job("ok")).wait(2) is wh.Status.SUCCESS
            deadline = time.monotonic() + 2
            while len(runs) < 4 and time.monotonic() < deadline:
                time.sleep(0.005)
            every.cancel()
            code = 0 if ok and len(runs) >= 4 and child.stop(timeout=1) else 1
        finally:
            os._exit(code)
    exited: list[int] = []

    def reap():
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            exited.append(os.waitstatus_to_exitcode(status))
        return done

    if not wait_until(reap, timeout=4):
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung")
    assert exited == [0]
    ticking.cancel()


def test_a_status_assigned_as_a_plain_int_becomes_a_status(worker):
    def known(job):
        job.ctx.status = 503

    def unknown(job):
        job.ctx.status = 404  # not a Status member: its class stands for it

    worker.register("known", known)
    worker.register("unknown", unknown)
    assert worker.perform(wh.Job("known")).wait(2) is wh.Status.UNAVAILABLE
    assert worker.perform(wh.Job("unknown"), sync=True) is wh.Status.BAD_REQUEST


@pytest.mark.parametrize("how", ["waits (GIL released)", "spins (GIL held)"])
def test_a_handler_that_blocks_never_holds_up_the_executions_queued_behind_it(make_worker, how):
    # The executor loop runs one execution per pop: the ones behind a busy handler stay in the
    # lane for another thread (woken by the stall watchdog when the busy one does not come back).
    release = threading.Event()
    quick_done: list[float] = []
    worker = make_worker(concurrency=4)

    def busy(job: wh.Job) -> None:
        if how.startswith("waits"):
            release.wait(5.0)
        else:
            end = time.monotonic() + 5.0
            while not release.is_set() and time.monotonic() < end:
                pass

    worker.register("busy", busy)
    worker.register("quick", lambda job: quick_done.append(time.monotonic()))
    blocker = worker.perform(wh.Job("busy"))
    time.sleep(0.05)  # the busy handler is running
    quick = [worker.perform(wh.Job("quick")) for _ in range(20)]
    try:
        assert all(e.wait(3.0) == wh.Status.SUCCESS for e in quick)
        assert not blocker.done(), "the quick ones finished while the busy one still ran"
    finally:
        release.set()
    assert blocker.wait(5.0) == wh.Status.SUCCESS


def test_handlers_that_block_all_run_at_once_while_quick_work_keeps_a_thread_busy():
    # Executor threads step down while another takes turns (rust/src/dispatch/executor.rs);
    # a handler that blocks stops taking turns, so the others are woken for the rest.
    barrier = threading.Barrier(6)
    ticks: list[float] = []
    worker = wh.Worker(concurrency=8)
    worker.register("meet", lambda job: barrier.wait(10))
    worker.register("tick", lambda job: ticks.append(time.monotonic()))
    with worker:
        for _ in range(20):
            worker.perform_every(wh.Job("tick"), 0.001)
        time.sleep(0.05)
        meetings = [worker.perform(wh.Job("meet")) for _ in range(6)]
        statuses = [m.wait(15) for m in meetings]
    assert statuses == [wh.Status.SUCCESS] * 6
    assert len(ticks) > 100
