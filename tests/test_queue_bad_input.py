"""Wrong input is refused at the call, with the exception its kind calls for: a wrong type is a
TypeError, a value out of range a ValueError, an unreachable Redis a wh.QueueError (quickly)."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time

import pytest
from queue_fixtures import *  # noqa: F403
from queue_fixtures import info
from redis_server import free_port

import workhorse as wh

pytestmark = pytest.mark.timeout(30)


class Opaque:
    """Would pickle; is not JSON."""


BAD_ARGS = [
    pytest.param([1, 2], id="list"),
    pytest.param("to=a@b.c", id="str"),
    pytest.param(42, id="int"),
    pytest.param(("to", "a@b.c"), id="tuple"),
    pytest.param(Opaque(), id="object"),
    pytest.param({1: "int key"}, id="int-key"),
    pytest.param({("a", "b"): 1}, id="tuple-key"),
    pytest.param({"s": {1, 2}}, id="set-value"),
    pytest.param({"b": b"bytes"}, id="bytes-value"),
    pytest.param({"o": Opaque()}, id="object-value"),
    pytest.param({"when": dt.datetime(2030, 1, 1)}, id="datetime-value"),
    pytest.param({"deep": [{"x": {1}}]}, id="nested-set"),
    pytest.param({"f": float("nan")}, id="nan-value"),
    pytest.param({"f": float("inf")}, id="inf-value"),
]


@pytest.mark.parametrize("args", BAD_ARGS)
def test_args_that_are_not_a_dict_of_json_values_are_a_type_error(queue, args):
    with pytest.raises(TypeError):
        queue.enqueue("x", args)
    with pytest.raises(TypeError):
        queue.enqueue_in("x", 10, args)
    with pytest.raises(TypeError):
        queue.enqueue_at("x", time.time() + 10, args)
    with pytest.raises(TypeError):
        queue.enqueue_unique("x", args)
    with pytest.raises(TypeError):
        queue.enqueue_many([("x", args)])
    # Nothing got in.
    q = info(queue, "x")
    assert q is None or (q.ready, q.scheduled) == (0, 0)


def test_args_are_never_pickled_even_for_picklable_objects(queue):
    # A dataclass-like object pickles fine; the queue still refuses it.
    import fractions

    with pytest.raises(TypeError):
        queue.enqueue("x", {"ratio": fractions.Fraction(1, 3)})


def test_enqueue_many_with_one_bad_pair_enqueues_nothing(queue):
    with pytest.raises(TypeError):
        queue.enqueue_many([("ok", {"n": 1}), ("ok", {"n": {2}}), ("ok", {"n": 3})])
    q = info(queue, "ok")
    assert q is None or q.ready == 0


@pytest.mark.parametrize("pair", [("onlyname",), "name", ("a", {}, "extra"), None])
def test_enqueue_many_items_must_be_name_args_pairs(queue, pair):
    with pytest.raises(TypeError):
        queue.enqueue_many([pair])


@pytest.mark.parametrize("name", [None, 1, b"send_email", ["send_email"], object()])
def test_a_job_name_that_is_not_a_str_is_a_type_error(queue, name):
    with pytest.raises(TypeError):
        queue.enqueue(name, {})
    with pytest.raises(TypeError):
        queue.enqueue_in(name, 1, {})
    with pytest.raises(TypeError):
        queue.enqueue_unique(name, {})
    with pytest.raises(TypeError):
        queue.enqueue_many([(name, {})])


def test_an_empty_job_name_is_a_value_error(queue):
    with pytest.raises(ValueError):
        queue.enqueue("", {})
    with pytest.raises(ValueError):
        queue.enqueue_in("", 1, {})
    with pytest.raises(ValueError):
        queue.enqueue_unique("", {})
    with pytest.raises(ValueError):
        queue.enqueue_many([("", {})])


@pytest.mark.parametrize("delay", ["30", None, [1], object()])
def test_enqueue_in_with_a_delay_that_is_not_seconds_is_a_type_error(queue, delay):
    with pytest.raises(TypeError):
        queue.enqueue_in("x", delay, {})


@pytest.mark.parametrize("when", ["tomorrow", None, dt.date(2030, 1, 1), [1]])
def test_enqueue_at_with_a_when_that_is_not_a_time_is_a_type_error(queue, when):
    with pytest.raises(TypeError):
        queue.enqueue_at("x", when, {})


def test_reasons_name_what_was_wrong(queue):
    with pytest.raises(TypeError, match="(?i)args|json|dict"):
        queue.enqueue("x", [1])
    with pytest.raises(TypeError, match="(?i)name|str"):
        queue.enqueue(7, {})


# -- handler options -----------------------------------------------------------------------


@pytest.mark.parametrize("priority", [0, -1, 100_001, 10**9])
def test_a_priority_outside_1_to_100000_is_a_value_error(qworker, priority):
    worker = qworker()
    with pytest.raises(ValueError):

        @worker.handler("x", priority=priority)
        def x(job):
            pass


@pytest.mark.parametrize("priority", [1, 100_000])
def test_priorities_1_and_100000_are_accepted(qworker, priority):
    worker = qworker()

    @worker.handler("x", priority=priority)
    def x(job):
        pass


@pytest.mark.parametrize("priority", ["10", 1.5, None])
def test_a_priority_that_is_not_an_int_is_a_type_error(qworker, priority):
    worker = qworker()
    with pytest.raises(TypeError):

        @worker.handler("x", priority=priority)
        def x(job):
            pass


@pytest.mark.parametrize("max_fails", [0, -3])
def test_max_fails_below_1_is_a_value_error(qworker, max_fails):
    worker = qworker()
    with pytest.raises(ValueError):

        @worker.handler("x", max_fails=max_fails)
        def x(job):
            pass


def test_a_negative_max_concurrency_is_a_value_error(qworker):
    worker = qworker()
    with pytest.raises(ValueError):

        @worker.handler("x", max_concurrency=-1)
        def x(job):
            pass


def test_a_backoff_that_is_not_callable_is_a_type_error(qworker):
    worker = qworker()
    with pytest.raises(TypeError):

        @worker.handler("x", backoff=5)
        def x(job):
            pass


def test_a_worker_queue_that_is_not_a_queue_is_a_type_error():
    with pytest.raises(TypeError):
        wh.Worker(queue="memory://")


# -- cron specs ------------------------------------------------------------------------------


BAD_CRON = [
    pytest.param("", id="empty"),
    pytest.param("not a cron", id="words"),
    pytest.param("61 * * * * *", id="second-61"),
    pytest.param("* * * * * * * *", id="eight-fields"),
    pytest.param("*/0 * * * * *", id="step-0"),
    pytest.param("* * 25 * * *", id="hour-25"),
]


@pytest.mark.parametrize("spec", BAD_CRON)
def test_a_bad_cron_spec_is_a_value_error_at_the_call(qworker, spec):
    worker = qworker()
    with pytest.raises(ValueError):
        worker.periodically_enqueue(spec, "report")


def test_a_bad_cron_spec_is_a_value_error_after_start_too(qworker):
    worker = qworker()
    worker.register("report", lambda job: None)
    worker.start()
    with pytest.raises(ValueError):
        worker.periodically_enqueue("every minute", "report")


def test_a_cron_spec_that_is_not_a_str_is_a_type_error(qworker):
    worker = qworker()
    with pytest.raises(TypeError):
        worker.periodically_enqueue(5, "report")


def test_periodically_enqueue_with_a_bad_name_is_refused(qworker):
    worker = qworker()
    with pytest.raises((TypeError, ValueError)):
        worker.periodically_enqueue("* * * * * *", "")
    with pytest.raises(TypeError):
        worker.periodically_enqueue("* * * * * *", None)


def test_periodically_enqueue_with_bad_args_is_a_type_error(qworker):
    worker = qworker()
    with pytest.raises(TypeError):
        worker.periodically_enqueue("* * * * * *", "report", args=[1])


def test_a_bad_cron_in_result_reschedule_is_a_value_error():
    with pytest.raises(ValueError):
        wh.Result.reschedule(cron="nope")


# -- from_url ----------------------------------------------------------------------------------


def test_queue_error_is_a_runtime_error():
    assert issubclass(wh.QueueError, RuntimeError)


def _open_and_use(url: str) -> None:
    queue = wh.Queue.from_url(url, namespace="unreachable")
    queue.enqueue("x", {})


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", "free-port"])
def test_an_unreachable_redis_is_a_queue_error_quickly(url):
    if url == "free-port":
        url = f"redis://127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    with pytest.raises(wh.QueueError):
        _open_and_use(url)
    assert time.monotonic() - started < 10


def test_a_redis_that_accepts_but_never_answers_is_a_queue_error_not_a_hang():
    # A listener that takes connections and says nothing (a half-open peer).
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    port = server.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        with pytest.raises(wh.QueueError):
            _open_and_use(f"redis://127.0.0.1:{port}/0")
        assert time.monotonic() - started < 20
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        server.close()


@pytest.mark.parametrize("url", ["http://localhost/", "memcached://x", "", "redis//nohost"])
def test_an_unknown_url_scheme_is_refused(url):
    with pytest.raises((ValueError, wh.QueueError)):
        wh.Queue.from_url(url)


def test_a_url_that_is_not_a_str_is_a_type_error():
    with pytest.raises(TypeError):
        wh.Queue.from_url(None)


@pytest.mark.parametrize("lease", [0, -1, float("nan")])
def test_a_lease_that_is_not_positive_seconds_is_a_value_error(lease):
    with pytest.raises(ValueError):
        wh.Queue.from_url("memory://", lease=lease)
