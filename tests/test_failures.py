"""Bad input fails loudly and names the argument; misbehaving handlers never kill the worker or
lose a scheduled execution; stop() cancels, waits up to its timeout, and resolves the rest."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import signal
import threading
import time

import pytest
from support import status_observer

import workhorse as wh

pytestmark = pytest.mark.timeout(10)

P = wh.PerformWith


@pytest.fixture
def ready(worker):
    """The shared worker with a no-op handler 'ok' registered."""
    worker.register("ok", lambda job: None)
    return worker


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "error"),
    [
        (0, ValueError),
        (-0.01, ValueError),
        (dt.timedelta(0), ValueError),
        (dt.timedelta(seconds=-1), ValueError),
        (float("nan"), ValueError),
        ("1s", TypeError),
        (None, TypeError),
    ],
)
def test_perform_every_rejects_a_bad_interval(ready, interval, error):
    with pytest.raises(error, match="interval"):
        ready.perform_every(wh.Job("ok"), interval)
    assert ready.stats()["scheduled"] == 0


@pytest.mark.parametrize(
    ("delay", "error"),
    [
        (-0.001, ValueError),
        (dt.timedelta(milliseconds=-1), ValueError),
        (float("nan"), ValueError),
        ("soon", TypeError),
        (True, TypeError),
    ],
)
def test_perform_in_rejects_a_bad_delay(ready, delay, error):
    with pytest.raises(error, match="delay"):
        ready.perform_in(wh.Job("ok"), delay)
    assert ready.stats()["scheduled"] == 0


@pytest.mark.parametrize("when", ["tomorrow", None, dt.date.today()])
def test_perform_at_rejects_what_is_not_a_time(ready, when):
    with pytest.raises(TypeError, match="when"):
        ready.perform_at(wh.Job("ok"), when)


@pytest.mark.parametrize("source", ["text", b"bytes", 42, None, object()])
def test_perform_receive_rejects_what_cannot_feed_a_worker(ready, source):
    with pytest.raises(TypeError, match="source"):
        ready.perform_receive(wh.Job("ok"), source)


@pytest.mark.parametrize("job", ["ok", {"handler": "ok"}, None])
def test_perform_rejects_what_is_not_a_job(ready, job):
    with pytest.raises(TypeError, match="job"):
        ready.perform(job)


@pytest.mark.parametrize("handler", [None, 42, "not callable"])
def test_register_rejects_a_non_callable_handler(make_worker, handler):
    with pytest.raises(TypeError, match="'h'.*callable"):
        make_worker().register("h", handler)


@pytest.mark.parametrize("name", ["", None, 3])
def test_register_rejects_a_bad_name(make_worker, name):
    with pytest.raises(TypeError, match="name"):
        make_worker().register(name, lambda job: None)


def test_register_rejects_a_duplicate_name(make_worker):
    worker = make_worker()
    worker.register("h", lambda job: None)
    with pytest.raises(ValueError, match="'h'.*already registered"):
        worker.register("h", lambda job: None)
    with pytest.raises(ValueError, match="'h'"):
        worker.handler("h")(lambda job: None)


def test_use_rejects_a_non_callable_adapter(make_worker):
    with pytest.raises(TypeError, match="adapter"):
        make_worker().use("not an adapter")
    with pytest.raises(TypeError, match="adapter"):
        wh.Worker(adapters=[None])


@pytest.mark.parametrize(
    ("value", "error"), [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)]
)
def test_worker_rejects_a_bad_concurrency(value, error):
    with pytest.raises(error, match="concurrency"):
        wh.Worker(concurrency=value)


def test_worker_rejects_a_session_that_is_not_a_session():
    with pytest.raises(TypeError, match="session"):
        wh.Worker(session={"pool": 1})


@pytest.mark.parametrize(
    ("capacity", "error"), [(0, ValueError), (-5, ValueError), ("3", TypeError), (1.5, TypeError)]
)
def test_channel_rejects_a_bad_capacity(capacity, error):
    with pytest.raises(error, match="capacity" if error is ValueError else None):
        wh.Channel(capacity)


@pytest.mark.parametrize("method", ["send", "recv"])
def test_channel_rejects_a_negative_timeout(method):
    channel = wh.Channel(1)
    args = ("x", -1) if method == "send" else (-1,)
    with pytest.raises(ValueError, match="timeout"):
        getattr(channel, method)(*args)


@pytest.mark.parametrize(("value", "error"), [(0, ValueError), (-2, ValueError), (2.5, TypeError)])
def test_executor_rejects_bad_max_workers(value, error):
    with pytest.raises(error, match="max_workers"):
        wh.Executor(max_workers=value)


def test_executor_submit_rejects_a_non_callable():
    executor = wh.Executor(1)
    try:
        with pytest.raises(TypeError, match="fn"):
            executor.submit("print")
    finally:
        executor.shutdown()


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"perform_with": P.SYNC, "max_workers": 0}, ValueError, "max_workers"),
        ({"perform_with": P.SYNC, "max_workers": -1}, ValueError, "max_workers"),
        ({"perform_with": P.SYNC, "max_workers": 2.0}, TypeError, "max_workers"),
        (
            {"perform_with": P.SYNC, "max_workers": 1, "start_interval": -1},
            ValueError,
            "start_interval",
        ),
        ({"perform_with": P.EVERY_SYNC, "max_workers": 1}, ValueError, "every"),
        ({"perform_with": P.EVERY_ASYNC, "max_workers": 1, "every": 0}, ValueError, "every"),
        ({"perform_with": P.EVERY_ASYNC, "max_workers": 1, "every": -1}, ValueError, "every"),
        ({"perform_with": P.RECEIVE_SYNC, "max_workers": 1}, ValueError, "source"),
        ({"perform_with": P.RECEIVE_ASYNC, "max_workers": 1, "source": 3}, TypeError, "source"),
        ({"perform_with": "sync", "max_workers": 1}, TypeError, "perform_with"),
        (
            {"perform_with": P.SYNC, "max_workers": 1, "worker_factory": 3},
            TypeError,
            "worker_factory",
        ),
    ],
)
def test_concurrent_job_rejects_bad_arguments(kwargs, error, names):
    with pytest.raises(error, match=names):
        wh.ConcurrentJob(wh.Job("h"), **kwargs)


def test_concurrent_job_rejects_what_is_not_a_job():
    with pytest.raises(TypeError, match="job"):
        wh.ConcurrentJob("h", perform_with=P.SYNC, max_workers=1)


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"timeout": 0}, ValueError, "timeout"),
        ({"timeout": -1}, ValueError, "timeout"),
        ({"timeout": "1"}, TypeError, "timeout"),
        ({"args": [1, 2]}, TypeError, "args"),
        ({"queue": ""}, TypeError, "queue"),
    ],
)
def test_job_rejects_bad_arguments(kwargs, error, names):
    with pytest.raises(error, match=names):
        wh.Job("h", **kwargs)


@pytest.mark.parametrize("handler", ["", None, 7])
def test_job_rejects_a_bad_handler_name(handler):
    with pytest.raises(TypeError, match="handler"):
        wh.Job(handler)


# -- unknown handlers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda w, j: w.perform(j),
        lambda w, j: w.perform(j, sync=True),
        lambda w, j: w.perform_in(j, 0.01),
        lambda w, j: w.perform_at(j, time.time()),
        lambda w, j: w.perform_every(j, 0.01),
        lambda w, j: w.perform_every(j, 0.01, sync=True),
        lambda w, j: w.perform_receive(j, [1, 2]),
    ],
    ids=["perform", "perform_sync", "perform_in", "perform_at", "every", "every_sync", "receive"],
)
def test_unknown_handler_raises_at_call_time(ready, call):
    with pytest.raises(wh.UnknownHandler, match="'missing'"):
        call(ready, wh.Job("missing"))
    stats = ready.stats()
    assert (stats["scheduled"], stats["receiving"], stats["in_flight"]) == (0, 0, 0)


def test_unknown_handler_is_a_key_error():
    assert issubclass(wh.UnknownHandler, KeyError)


def test_concurrent_job_start_with_an_unknown_handler_raises_unknown_handler():
    cj = wh.ConcurrentJob(wh.Job("missing"), perform_with=P.SYNC, max_workers=1)
    try:
        with pytest.raises(wh.UnknownHandler, match="'missing'"):
            cj.start()
    finally:
        cj.stop(timeout=1)


# -- closed channels and stopped workers ---------------------------------------------------------


@pytest.mark.parametrize("send", ["send", "try_send", "asend"])
def test_sending_on_a_closed_channel_raises_channel_closed(send):
    channel = wh.Channel(1)
    channel.close()
    with pytest.raises(wh.ChannelClosed):
        if send == "asend":
            asyncio.run(channel.asend("x"))
        else:
            getattr(channel, send)("x")


@pytest.mark.parametrize(
    "call",
    [
        lambda w: w.perform(wh.Job("ok")),
        lambda w: w.perform(wh.Job("ok"), sync=True),
        lambda w: w.perform_in(wh.Job("ok"), 0),
        lambda w: w.perform_at(wh.Job("ok"), time.time()),
        lambda w: w.perform_every(wh.Job("ok"), 0.01),
        lambda w: w.perform_receive(wh.Job("ok"), [1]),
    ],
    ids=["perform", "perform_sync", "perform_in", "perform_at", "every", "receive"],
)
def test_a_stopped_worker_refuses_work_with_worker_stopped(ready, call):
    ready.stop(timeout=1)
    with pytest.raises(wh.WorkerStopped):
        call(ready)


# -- handlers that misbehave ---------------------------------------------------------------------


class Unusual(BaseException):
    pass


RAISED = [
    (RuntimeError("plain"), wh.Status.INTERNAL_ERROR),
    (wh.ArgError("bad arg"), wh.Status.BAD_REQUEST),
    (SystemExit(3), wh.Status.INTERNAL_ERROR),
    (KeyboardInterrupt(), wh.Status.INTERNAL_ERROR),
    (Unusual(), wh.Status.INTERNAL_ERROR),
]
RAISED_IDS = ["RuntimeError", "ArgError", "SystemExit", "KeyboardInterrupt", "BaseException"]


@pytest.mark.parametrize(("exc", "status"), RAISED, ids=RAISED_IDS)
def test_a_raising_sync_handler_never_kills_the_worker(make_worker, exc, status):
    worker = make_worker(concurrency=1).start()  # one executor thread: it must survive

    def fail(job):
        raise exc

    worker.register("fail", fail)
    worker.register("ok", lambda job: None)
    for _ in range(3):
        execution = worker.perform(wh.Job("fail"))
        assert execution.wait(2) is status
        assert execution.error is exc
    assert worker.perform(wh.Job("ok")).wait(2) is wh.Status.SUCCESS


@pytest.mark.parametrize(("exc", "status"), RAISED, ids=RAISED_IDS)
def test_a_raising_async_handler_never_kills_the_worker(make_worker, exc, status):
    worker = make_worker(concurrency=1).start()

    async def fail(job):
        raise exc

    async def ok(job):
        return None

    worker.register("fail", fail)
    worker.register("ok", ok)
    for _ in range(3):
        execution = worker.perform(wh.Job("fail"))
        assert execution.wait(2) is status
        assert execution.error is exc
    assert worker.perform(wh.Job("ok")).wait(2) is wh.Status.SUCCESS


@pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt])
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_base_exception_in_an_async_handler_with_a_timeout_never_kills_the_loop(exc_type):
    worker = wh.Worker().start()

    async def fail(job):
        raise exc_type()

    async def ok(job):
        return None

    worker.register("fail", fail)
    worker.register("ok", ok)
    try:
        execution = worker.perform(wh.Job("fail", timeout=0.3))
        assert execution.wait(2) is wh.Status.INTERNAL_ERROR
        assert worker.perform(wh.Job("ok")).wait(1) is wh.Status.SUCCESS
    finally:
        worker.stop(timeout=0.1)  # a dead loop leaves executions in flight
        del worker
        gc.collect()  # report the dead loop's leftovers here, not at interpreter exit


@pytest.mark.parametrize("kind", ["plain", "async"])
def test_adapters_see_the_final_status_when_a_handler_raises_system_exit(make_worker, kind):
    seen = []

    observe = status_observer(seen)

    def plain(job):
        raise SystemExit(1)

    async def coro(job):
        raise SystemExit(1)

    worker = make_worker(adapters=[observe]).start()
    worker.register("h", plain if kind == "plain" else coro)
    assert worker.perform(wh.Job("h")).wait(2) is wh.Status.INTERNAL_ERROR
    assert seen == [wh.Status.INTERNAL_ERROR]


@pytest.mark.parametrize(
    "exc",
    [RuntimeError("x"), SystemExit(1), Unusual()],
    ids=["RuntimeError", "SystemExit", "BaseException"],
)
@pytest.mark.parametrize("sync", [True, False])
def test_a_raising_handler_never_stops_its_interval(make_worker, wait_until, exc, sync):
    worker = make_worker(concurrency=2).start()
    runs = []

    def fail(job):
        runs.append(1)
        raise exc

    worker.register("fail", fail)
    schedule = worker.perform_every(wh.Job("fail"), 0.005, sync=sync)
    assert wait_until(lambda: len(runs) >= 6)
    schedule.cancel()


def test_failing_handlers_never_lose_a_pending_timer(make_worker, wait_until):
    worker = make_worker(concurrency=1).start()

    def fail(job):
        raise SystemExit(1)

    worker.register("fail", fail)
    worker.register("ok", lambda job: None)
    timers = [worker.perform_in(wh.Job("ok"), n / 1000) for n in range(0, 40, 4)]
    failures = [worker.perform(wh.Job("fail")) for _ in range(20)]
    assert all(t.execution.wait(2) is wh.Status.SUCCESS for t in timers)
    assert all(f.wait(2) is wh.Status.INTERNAL_ERROR for f in failures)


def test_a_raising_handler_never_ends_a_receive(make_worker):
    worker = make_worker().start()
    seen = []

    def fail(job):
        seen.append(job.args["received_data"])
        raise SystemExit(1)

    worker.register("fail", fail)
    schedule = worker.perform_receive(wh.Job("fail"), range(10), sync=True)
    assert schedule.wait(2)
    assert seen == list(range(10))


# -- timeouts ------------------------------------------------------------------------------------


def test_sync_handler_past_its_timeout_is_timeout_and_told_through_the_context(worker):
    observed = {}

    def slow(job):
        observed["before"] = job.ctx.cancelled
        observed["waited"] = job.ctx.wait_cancelled(2)
        observed["after"] = job.ctx.cancelled
        return "late result"

    worker.register("slow", slow)
    job = wh.Job("slow", timeout=0.03)
    start = time.monotonic()
    execution = worker.perform(job)
    assert execution.wait(2) is wh.Status.TIMEOUT
    assert 0.025 <= time.monotonic() - start < 1.0
    assert execution.wait(2) is wh.Status.TIMEOUT
    assert observed == {"before": False, "waited": True, "after": True}
    assert job.ctx.cancelled
    assert job.ctx.deadline is not None


def test_sync_handler_that_ignores_its_timeout_ends_as_timeout(worker, wait_until):
    def stubborn(job):
        time.sleep(0.06)

    worker.register("stubborn", stubborn)
    execution = worker.perform(wh.Job("stubborn", timeout=0.02))
    assert execution.wait(2) is wh.Status.TIMEOUT
    assert wait_until(execution.done)
    assert execution.status is wh.Status.TIMEOUT, "the late result was not discarded"


def test_perform_sync_past_the_timeout_returns_timeout(worker):
    worker.register("slow", lambda job: time.sleep(0.04))
    assert worker.perform(wh.Job("slow", timeout=0.01), sync=True) is wh.Status.TIMEOUT


def test_adapters_see_timeout_on_the_way_out(make_worker, wait_until):
    seen = []

    worker = make_worker(adapters=[status_observer(seen)]).start()
    worker.register("slow", lambda job: time.sleep(0.04))
    worker.perform(wh.Job("slow", timeout=0.01)).wait(2)
    assert wait_until(lambda: seen)
    assert seen == [wh.Status.TIMEOUT]


def test_a_timed_out_handler_never_stops_its_interval(worker, wait_until):
    runs = []

    def slow(job):
        runs.append(1)
        job.ctx.wait_cancelled(1)

    worker.register("slow", slow)
    schedule = worker.perform_every(wh.Job("slow", timeout=0.005), 0.01, sync=True)
    assert wait_until(lambda: len(runs) >= 4)
    schedule.cancel()
    assert schedule.wait(2)
    assert worker.stats()["by_status"].get(408, 0) >= 4


# -- stop ----------------------------------------------------------------------------------------


def test_stop_cancels_the_contexts_of_running_handlers(make_worker):
    worker = make_worker(concurrency=3).start()
    started = threading.Barrier(4)
    woke = []

    def patient(job):
        started.wait(2)
        woke.append(job.ctx.wait_cancelled(3))

    worker.register("patient", patient)
    executions = [worker.perform(wh.Job("patient")) for _ in range(3)]
    started.wait(2)
    start = time.monotonic()
    assert worker.stop(timeout=2) is True
    assert time.monotonic() - start < 1.0
    assert woke == [True, True, True]
    assert all(e.done() for e in executions)


def test_stop_waits_only_up_to_its_timeout(make_worker):
    worker = make_worker().start()
    started, release = threading.Event(), threading.Event()

    def stubborn(job):
        started.set()
        release.wait(3)  # ignores cancellation

    worker.register("stubborn", stubborn)
    execution = worker.perform(wh.Job("stubborn"))
    assert started.wait(2)
    start = time.monotonic()
    assert worker.stop(timeout=0.05) is False
    assert 0.04 <= time.monotonic() - start < 1.0
    release.set()
    assert execution.wait(2) is wh.Status.SUCCESS


def test_executions_not_started_at_stop_resolve_as_unavailable(make_worker):
    worker = make_worker(concurrency=1).start()
    started, release = threading.Event(), threading.Event()
    worker.register("block", lambda job: (started.set(), release.wait(2)))
    worker.register("ok", lambda job: None)
    running = worker.perform(wh.Job("block"))
    assert started.wait(2)
    queued = [worker.perform(wh.Job("ok")) for _ in range(3)]
    threading.Timer(0.05, release.set).start()
    assert worker.stop(timeout=2)
    assert running.status is wh.Status.SUCCESS
    for execution in queued:
        assert execution.wait(1) is wh.Status.UNAVAILABLE
        assert isinstance(execution.error, wh.WorkerStopped)


def test_a_pending_timer_at_stop_resolves_as_unavailable(make_worker):
    worker = make_worker().start()
    worker.register("ok", lambda job: None)
    schedule = worker.perform_in(wh.Job("ok"), 30)
    assert worker.stop(timeout=1)
    assert schedule.execution.wait(1) is wh.Status.UNAVAILABLE
    assert schedule.wait(1)


def test_an_interval_with_a_tick_waiting_for_a_permit_ends_at_stop(make_worker):
    worker = make_worker(concurrency=1).start()
    started, release = threading.Event(), threading.Event()
    worker.register("block", lambda job: (started.set(), release.wait(2)))
    worker.register("ok", lambda job: None)
    worker.perform(wh.Job("block"))
    assert started.wait(2)
    schedule = worker.perform_every(wh.Job("ok"), 0.005)  # its ticks queue behind "block"
    time.sleep(0.03)
    release.set()
    assert worker.stop(timeout=2)
    assert schedule.wait(1), "the interval schedule never ended"


def test_an_async_handler_still_running_when_stop_times_out_resolves():
    # Three workers: the bug is a race that the loop wins almost every time.
    executions = []
    for _ in range(3):
        worker = wh.Worker().start()
        started = threading.Event()

        async def forever(job, started=started):
            started.set()
            await asyncio.sleep(30)

        worker.register("forever", forever)
        executions.append(worker.perform(wh.Job("forever")))
        assert started.wait(2)
        assert worker.stop(timeout=0.02) is False
    try:
        assert [e.wait(0.3) for e in executions] == [wh.Status.UNAVAILABLE] * 3
        assert all(e.job.ctx.cancelled for e in executions)
    finally:
        del worker, executions
        gc.collect()  # report the stopped loops' leftovers here, not at interpreter exit


def test_stop_waits_for_a_sync_perform_running_in_another_thread(make_worker):
    worker = make_worker().start()
    started, finished = threading.Event(), []

    def slow(job):
        started.set()
        time.sleep(0.1)
        finished.append(1)

    worker.register("slow", slow)
    caller = threading.Thread(target=worker.perform, args=(wh.Job("slow"),), kwargs={"sync": True})
    caller.start()
    assert started.wait(2)
    assert worker.running == 1
    worker.stop(timeout=2)
    assert finished == [1]
    caller.join(2)


class _Alarm(Exception):
    pass


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs SIGALRM")
def test_stop_without_timeout_is_interrupted_by_a_signal(make_worker):
    worker = make_worker().start()
    started, release = threading.Event(), threading.Event()

    def stubborn(job):
        started.set()
        release.wait(3)

    worker.register("stubborn", stubborn)
    worker.perform(wh.Job("stubborn"))
    assert started.wait(2)

    def on_alarm(signum, frame):
        raise _Alarm()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    threading.Timer(0.6, release.set).start()  # bounds the test if the signal is ignored
    start = time.monotonic()
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.03)
        with pytest.raises(_Alarm):
            worker.stop()
        elapsed = time.monotonic() - start
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        release.set()
    assert elapsed < 0.4, f"the signal was handled only after stop() returned ({elapsed:.2f}s)"


def test_adapters_applied_with_adapt_before_register_see_the_final_status(make_worker):
    worker = make_worker(concurrency=1).start()
    seen: list[wh.Status] = []

    def fails(job):
        raise ValueError("boom")

    worker.register("fails", wh.adapt(fails, status_observer(seen)))
    worker.register("ok", wh.adapt(wh.adapt(lambda job: None, status_observer(seen))))
    assert worker.perform(wh.Job("fails")).wait(2) is wh.Status.INTERNAL_ERROR
    assert worker.perform(wh.Job("ok"), sync=True) is wh.Status.SUCCESS
    assert seen == [wh.Status.INTERNAL_ERROR, wh.Status.SUCCESS]
