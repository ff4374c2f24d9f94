"""wh.Executor: the concurrent.futures.Executor (ThreadPoolExecutor API) on the workhorse core."""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time

import pytest
from support import poll_until

import workhorse as wh

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
def make_executor():
    """Build executors that are shut down (cancelling what is left) at teardown."""
    executors = []

    def make(*args, **kwargs):
        executor = wh.Executor(*args, **kwargs)
        executors.append(executor)
        return executor

    yield make
    for executor in executors:
        executor.shutdown(wait=False, cancel_futures=True)


def test_is_a_concurrent_futures_executor():
    assert issubclass(wh.Executor, cf.Executor)


def test_submit_returns_a_future_with_the_result(make_executor):
    executor = make_executor(2)
    future = executor.submit(pow, 2, 10)
    assert isinstance(future, cf.Future)
    assert future.result(timeout=2) == 1024


def test_submit_passes_positional_and_keyword_arguments(make_executor):
    executor = make_executor(1)
    future = executor.submit(lambda a, b=0, *, c: (a, b, c), 1, b=2, c=3)
    assert future.result(timeout=2) == (1, 2, 3)


def test_calls_run_off_the_submitting_thread(make_executor):
    executor = make_executor(1)
    assert executor.submit(threading.get_ident).result(timeout=2) != threading.get_ident()


def test_exception_is_set_on_the_future(make_executor):
    executor = make_executor(1)
    future = executor.submit(lambda: 1 / 0)
    assert isinstance(future.exception(timeout=2), ZeroDivisionError)
    with pytest.raises(ZeroDivisionError):
        future.result(timeout=2)


@pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt])
def test_base_exceptions_go_to_the_future_and_the_executor_keeps_working(make_executor, exc_type):
    executor = make_executor(1)

    def fail():
        raise exc_type()

    future = executor.submit(fail)
    assert isinstance(future.exception(timeout=2), exc_type)
    assert executor.submit(lambda: "still alive").result(timeout=2) == "still alive"


def test_map_returns_results_in_input_order(make_executor):
    executor = make_executor(4)

    def slow_square(x):
        time.sleep((10 - x) / 1000)  # later items finish first
        return x * x

    assert list(executor.map(slow_square, range(10))) == [x * x for x in range(10)]


def test_map_with_several_iterables(make_executor):
    executor = make_executor(2)
    assert list(executor.map(lambda a, b: a + b, [1, 2, 3], [10, 20, 30])) == [11, 22, 33]


def test_map_timeout_raises_timeout_error(make_executor):
    executor = make_executor(1)
    release = threading.Event()
    results = executor.map(lambda _: release.wait(2), [None], timeout=0.02)
    with pytest.raises(TimeoutError):
        next(results)
    release.set()


def test_map_reraises_the_first_exception_when_iterated(make_executor):
    executor = make_executor(2)
    results = executor.map(lambda x: 1 / x, [1, 0, 2])
    assert next(results) == 1
    with pytest.raises(ZeroDivisionError):
        next(results)


def test_as_completed_works_with_its_futures(make_executor):
    executor = make_executor(3)
    futures = [executor.submit(time.sleep, d) for d in (0.03, 0.01, 0.02)]
    done = list(cf.as_completed(futures, timeout=2))
    assert set(done) == set(futures)


def test_max_workers_bounds_calls_in_flight(make_executor, tracker, wait_until):
    executor = make_executor(max_workers=2)
    release = threading.Event()

    def hold():
        with tracker.running():
            release.wait(2)

    futures = [executor.submit(hold) for _ in range(6)]
    assert wait_until(lambda: tracker.active == 2)
    time.sleep(0.03)
    assert tracker.max_active == 2
    release.set()
    cf.wait(futures, timeout=2)
    assert all(f.done() and f.exception() is None for f in futures)


def test_default_max_workers_runs_calls_concurrently(make_executor, tracker, wait_until):
    executor = make_executor()
    release = threading.Event()

    def hold():
        with tracker.running():
            release.wait(2)

    futures = [executor.submit(hold) for _ in range(3)]
    assert wait_until(lambda: tracker.active == 3)
    release.set()
    cf.wait(futures, timeout=2)


def test_a_pending_future_can_be_cancelled(make_executor):
    executor = make_executor(1)
    release = threading.Event()
    ran = []
    blocker = executor.submit(release.wait, 2)
    pending = executor.submit(ran.append, 1)
    assert pending.cancel() is True
    release.set()
    blocker.result(timeout=2)
    assert executor.submit(lambda: None).result(timeout=2) is None
    assert pending.cancelled()
    assert ran == []


def test_a_running_future_cannot_be_cancelled(make_executor, wait_until):
    executor = make_executor(1)
    started, release = threading.Event(), threading.Event()
    future = executor.submit(lambda: (started.set(), release.wait(2)))
    assert started.wait(2)
    assert future.cancel() is False
    release.set()
    assert future.result(timeout=2)[1] is True


# -- shutdown ------------------------------------------------------------------------------------


def test_shutdown_wait_runs_every_submitted_call(make_executor):
    executor = make_executor(2)
    done = []
    futures = [executor.submit(lambda i=i: (time.sleep(0.005), done.append(i))) for i in range(8)]
    executor.shutdown(wait=True)
    assert sorted(done) == list(range(8))
    assert all(f.done() for f in futures)


def test_submit_after_shutdown_raises_runtime_error(make_executor):
    executor = make_executor(1)
    executor.shutdown()
    with pytest.raises(RuntimeError, match="shutdown"):
        executor.submit(print)


def test_shutdown_without_wait_returns_at_once_and_calls_still_finish(make_executor):
    executor = make_executor(1)
    release = threading.Event()
    futures = [executor.submit(release.wait, 3) for _ in range(3)]
    start = time.monotonic()
    executor.shutdown(wait=False)
    assert time.monotonic() - start < 1.0, "shutdown(wait=False) waited for the calls"
    release.set()
    done, not_done = cf.wait(futures, timeout=2)
    assert not not_done
    assert all(not f.cancelled() for f in futures)


def test_shutdown_cancel_futures_cancels_pending_calls_and_lets_running_ones_finish(
    make_executor,
):
    executor = make_executor(2)
    started, release = threading.Barrier(3), threading.Event()

    def hold():
        started.wait(2)
        release.wait(2)
        return "finished"

    running = [executor.submit(hold) for _ in range(2)]
    pending = [executor.submit(hold) for _ in range(4)]
    started.wait(2)
    executor.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in pending)
    release.set()
    assert [f.result(timeout=2) for f in running] == ["finished", "finished"]


def test_shutdown_cancel_futures_with_wait_waits_for_running_calls(make_executor):
    executor = make_executor(1)
    started = threading.Event()
    finished = []

    def slow():
        started.set()
        time.sleep(0.05)
        finished.append(1)

    running = executor.submit(slow)
    pending = executor.submit(slow)
    assert started.wait(2)
    executor.shutdown(wait=True, cancel_futures=True)
    assert finished == [1]
    assert running.done() and not running.cancelled()
    assert pending.cancelled()


def test_shutdown_of_an_unused_executor_is_quick():
    executor = wh.Executor(2)
    start = time.monotonic()
    executor.shutdown()
    assert time.monotonic() - start < 0.5


def test_context_manager_waits_for_calls_on_exit(make_executor):
    done = []
    with make_executor(2) as executor:
        for i in range(4):
            executor.submit(lambda i=i: (time.sleep(0.01), done.append(i)))
    assert sorted(done) == [0, 1, 2, 3]
    with pytest.raises(RuntimeError):
        executor.submit(print)


def test_a_call_can_submit_another_call(make_executor):
    executor = make_executor(2)

    def outer():
        return executor.submit(lambda: "inner").result(timeout=2)

    assert executor.submit(outer).result(timeout=2) == "inner"


# -- Future semantics ----------------------------------------------------------------------------


def test_result_with_timeout_raises_timeout_error_while_pending(make_executor):
    executor = make_executor(1)
    release = threading.Event()
    future = executor.submit(release.wait, 2)
    with pytest.raises(TimeoutError):
        future.result(timeout=0.01)
    release.set()
    assert future.result(timeout=2) is True


def test_result_of_a_cancelled_future_raises_cancelled_error(make_executor):
    executor = make_executor(1)
    release = threading.Event()
    executor.submit(release.wait, 2)
    pending = executor.submit(lambda: None)
    assert pending.cancel()
    release.set()
    with pytest.raises(cf.CancelledError):
        pending.result(timeout=1)


def test_done_callbacks_run_once_whether_added_before_or_after_completion(make_executor):
    executor = make_executor(2)
    release = threading.Event()
    calls = []
    future = executor.submit(release.wait, 2)
    future.add_done_callback(lambda f: calls.append(("before", f.result())))
    release.set()
    future.result(timeout=2)
    future.add_done_callback(lambda f: calls.append(("after", f.result())))
    assert calls == [("before", True), ("after", True)]


def test_wait_first_completed_returns_the_finished_future(make_executor):
    executor = make_executor(2)
    release = threading.Event()
    slow = executor.submit(release.wait, 2)
    quick = executor.submit(lambda: "quick")
    done, not_done = cf.wait([slow, quick], timeout=2, return_when=cf.FIRST_COMPLETED)
    assert quick in done and slow in not_done
    release.set()


def test_a_burst_of_calls_completes_each_future_exactly_once(make_executor):
    # Callbacks, waiters and results race with completion from the executor's threads.
    executor = make_executor(4)
    lock = threading.Lock()
    called = []

    def on_done(future):
        with lock:
            called.append(future.result())

    futures = []
    for i in range(2000):
        future = executor.submit(int, i)
        future.add_done_callback(on_done)
        futures.append(future)
    assert sorted(f.result() for f in cf.as_completed(futures, timeout=5)) == list(range(2000))
    done, not_done = cf.wait(futures, timeout=5)
    assert not not_done
    # As in the stdlib, a future's waiters are told before its callbacks run (in the thread
    # that finished it): the last callbacks may still be running when wait() returns.
    def count() -> int:
        with lock:
            return len(called)

    assert poll_until(lambda: count() == 2000, timeout=5)
    assert sorted(called) == list(range(2000))


def test_initializer_runs_in_each_thread_before_its_calls():
    seen = threading.local()
    inits = []

    def init(tag):
        seen.tag = tag
        inits.append(threading.get_ident())

    with wh.Executor(max_workers=2, initializer=init, initargs=("ready",)) as ex:
        tags = list(ex.map(lambda _: seen.tag, range(20)))
    assert tags == ["ready"] * 20
    assert 1 <= len(inits) <= 2 and len(set(inits)) == len(inits)


def test_a_failing_initializer_breaks_the_pool():
    from concurrent.futures.thread import BrokenThreadPool

    def init():
        raise RuntimeError("no database")

    ex = wh.Executor(max_workers=1, initializer=init)
    first = ex.submit(lambda: 1)
    with pytest.raises(BrokenThreadPool):
        first.result(timeout=5)
    with pytest.raises(BrokenThreadPool):
        ex.submit(lambda: 2)
    ex.shutdown(wait=True)  # returns: nothing is left to wait for


def test_initializer_must_be_callable():
    with pytest.raises(TypeError, match="initializer"):
        wh.Executor(initializer=42)  # type: ignore[arg-type]


def test_wait_first_exception_returns_at_the_failing_future(make_executor):
    executor = make_executor(2)
    release = threading.Event()
    slow = executor.submit(release.wait, 5)
    failing = executor.submit(lambda: 1 / 0)
    done, not_done = cf.wait([slow, failing], timeout=5, return_when=cf.FIRST_EXCEPTION)
    assert failing in done and slow in not_done
    assert isinstance(failing.exception(), ZeroDivisionError)
    release.set()
    done, not_done = cf.wait([slow, failing], timeout=5)
    assert not not_done


def test_as_completed_yields_futures_as_they_finish_and_honours_its_timeout(make_executor):
    executor = make_executor(2)
    release = threading.Event()
    slow = executor.submit(release.wait, 5)
    quick = executor.submit(lambda: "quick")
    seen = []
    with pytest.raises(cf.TimeoutError):
        for future in cf.as_completed([slow, quick], timeout=0.3):
            seen.append(future)
    assert seen == [quick]
    release.set()
    assert list(cf.as_completed([slow], timeout=5)) == [slow]
    # as_completed removed its waiters again: completion later notifies nobody stale.
    assert not slow._waiters and not quick._waiters


def test_a_cancelled_pending_future_is_reported_by_wait_and_as_completed(make_executor):
    executor = make_executor(1)
    release = threading.Event()
    blocker = executor.submit(release.wait, 5)
    pending = executor.submit(lambda: "never")
    assert pending.cancel()
    # As with ThreadPoolExecutor, wait() counts it once the executor has seen the cancel.
    release.set()
    done, not_done = cf.wait([pending], timeout=5)
    assert pending in done and pending.cancelled()
    assert blocker.result(5) is True
    assert list(cf.as_completed([pending], timeout=1)) == [pending]


def test_threads_blocked_in_result_and_exception_wake_when_the_call_ends(make_executor):
    executor = make_executor(1)
    release = threading.Event()
    ok = executor.submit(lambda: release.wait(5) and "ok")
    bad = executor.submit(lambda: 1 / 0)
    got: list[object] = []
    threads = [
        threading.Thread(target=lambda: got.append(ok.result(5))),
        threading.Thread(target=lambda: got.append(type(bad.exception(5)).__name__)),
        threading.Thread(target=lambda: got.append(ok.exception(5))),
    ]
    for t in threads:
        t.start()
    time.sleep(0.05)  # let them block
    release.set()
    for t in threads:
        t.join(5)
    assert sorted(map(str, got)) == ["None", "ZeroDivisionError", "ok"]
    with pytest.raises(ZeroDivisionError):
        bad.result()


def test_futures_of_several_executors_mix_with_stdlib_futures_in_wait(make_executor):
    # wait() takes every future's lock in turn; ours share one re-entrant lock, the stdlib's
    # have one each: mixed lists work, in either order.
    ours = [make_executor(2).submit(int, i) for i in range(20)]
    with cf.ThreadPoolExecutor(2) as tpe:
        theirs = [tpe.submit(int, i) for i in range(20)]
        done, not_done = cf.wait(ours + theirs, timeout=5)
        assert not not_done and len(done) == 40
        results = sorted(f.result() for f in cf.as_completed(theirs + ours, timeout=5))
    assert results == sorted(list(range(20)) * 2)


def test_asyncio_can_await_an_executor_future(make_executor, run_async):
    import asyncio

    executor = make_executor(2)

    async def main():
        return await asyncio.wrap_future(executor.submit(lambda: 41 + 1))

    assert run_async(main()) == 42


def test_a_call_queued_behind_a_blocked_one_runs_on_a_second_thread_every_time(make_executor):
    # The second thread may step down (another took a turn just before): the stall watchdog
    # must still wake it while the first one's call blocks (rust/src/dispatch/executor.rs).
    for _ in range(20):
        executor = make_executor(2)
        release = threading.Event()
        slow = executor.submit(release.wait, 5)
        quick = executor.submit(lambda: "quick")
        assert quick.result(timeout=0.3) == "quick"
        release.set()
        assert slow.result(5) is True
