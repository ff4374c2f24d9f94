"""Job, Context, Session, Status and the adapter helpers (adapt, run_safely), without a worker."""

from __future__ import annotations

import threading
import time

import pytest

import workhorse as wh

pytestmark = pytest.mark.timeout(10)


# -- Status --------------------------------------------------------------------------------------


def test_status_codes_are_the_http_like_values_of_the_contract():
    assert {s.name: int(s) for s in wh.Status} == {
        "UNKNOWN": -1,
        "SUCCESS": 200,
        "BAD_REQUEST": 400,
        "UNAUTHORIZED": 401,
        "FORBIDDEN": 403,
        "TIMEOUT": 408,
        "NO_RESPONSE": 444,
        "INTERNAL_ERROR": 500,
        "UNAVAILABLE": 503,
    }


def test_status_is_an_int_enum_comparable_with_plain_codes():
    assert wh.Status.SUCCESS == 200
    assert wh.Status(503) is wh.Status.UNAVAILABLE
    assert wh.Status.TIMEOUT > wh.Status.BAD_REQUEST


def test_status_is_error_for_4xx_and_5xx_only():
    errors = {s for s in wh.Status if s.is_error}
    assert errors == {s for s in wh.Status if s >= 400}
    assert not wh.Status.SUCCESS.is_error
    assert not wh.Status.UNKNOWN.is_error


# -- Job -----------------------------------------------------------------------------------------


def test_job_defaults():
    job = wh.Job("email")
    assert job.handler == "email"
    assert job.args == {}
    assert job.queue == "default"
    assert job.timeout is None
    assert job.ctx.status is wh.Status.UNKNOWN


def test_job_keeps_its_own_copy_of_the_args_mapping():
    args = {"to": "a@b.c"}
    job = wh.Job("email", args, queue="mail", timeout=2)
    args["to"] = "changed"
    assert job.args == {"to": "a@b.c"}
    assert job.queue == "mail"
    assert job.timeout == 2.0


def test_job_ids_are_unique_and_stable():
    a, b = wh.Job("h"), wh.Job("h")
    assert a.id != b.id
    assert a.id == a.id


def test_job_copy_deep_copies_args_and_gets_a_new_id():
    job = wh.Job("h", {"nested": [1, 2]}, queue="q", timeout=1.5)
    clone = job.copy()
    clone.args["nested"].append(3)
    assert job.args == {"nested": [1, 2]}
    assert (clone.handler, clone.queue, clone.timeout) == ("h", "q", 1.5)
    assert clone.id != job.id


def test_job_copy_gets_a_fresh_context_of_its_own():
    job = wh.Job("h")
    job.ctx.set_status(wh.Status.FORBIDDEN)
    clone = job.copy()
    assert clone.ctx is not job.ctx
    assert clone.ctx.status is wh.Status.UNKNOWN
    clone.ctx.set("k", "clone")
    assert job.ctx.get("k") is None


@pytest.mark.parametrize(
    ("accessor", "value", "expected"),
    [
        ("arg_str", "hi", "hi"),
        ("arg_int", 7, 7),
        ("arg_float", 1.5, 1.5),
        ("arg_float", 2, 2.0),
        ("arg_bool", True, True),
        ("arg_bool", False, False),
    ],
)
def test_typed_arg_accessors_return_values_of_the_wanted_type(accessor, value, expected):
    job = wh.Job("h", {"k": value})
    got = getattr(job, accessor)("k")
    assert got == expected
    assert type(got) is type(expected)


@pytest.mark.parametrize(
    ("accessor", "wanted"),
    [("arg_str", "str"), ("arg_int", "int"), ("arg_float", "float"), ("arg_bool", "bool")],
)
def test_missing_arg_raises_arg_error_naming_key_and_type(accessor, wanted):
    job = wh.Job("h", {"other": 1})
    with pytest.raises(wh.ArgError, match=rf"'user_id'.*missing.*{wanted}"):
        getattr(job, accessor)("user_id")


@pytest.mark.parametrize(
    ("accessor", "value", "wanted"),
    [
        ("arg_str", 5, "str"),
        ("arg_int", "5", "int"),
        ("arg_int", 5.0, "int"),
        ("arg_int", True, "int"),
        ("arg_float", "1.5", "float"),
        ("arg_float", False, "float"),
        ("arg_bool", 1, "bool"),
        ("arg_bool", "true", "bool"),
    ],
)
def test_wrongly_typed_arg_raises_arg_error_naming_key_and_type(accessor, value, wanted):
    job = wh.Job("h", {"count": value})
    with pytest.raises(wh.ArgError, match=rf"'count' must be {wanted}, got {type(value).__name__}"):
        getattr(job, accessor)("count")


def test_arg_error_is_a_value_error():
    assert issubclass(wh.ArgError, ValueError)


# -- Context -------------------------------------------------------------------------------------


def test_context_starts_empty_and_unknown():
    ctx = wh.Context()
    assert ctx.get("missing") is None
    assert ctx.get("missing", 3) == 3
    assert ctx.status is wh.Status.UNKNOWN
    assert ctx.error is None
    assert ctx.deadline is None
    assert ctx.cancelled is False
    assert isinstance(ctx.session, wh.Session)


def test_context_set_and_get():
    ctx = wh.Context()
    ctx.set("a", 1)
    ctx.set("a", 2)
    assert ctx.get("a") == 2


def test_context_status_is_read_write_and_set_status_coerces_to_status():
    ctx = wh.Context()
    ctx.set_status(403)
    assert ctx.status is wh.Status.FORBIDDEN
    ctx.status = wh.Status.NO_RESPONSE
    assert ctx.status == 444


def test_context_set_status_rejects_codes_outside_status():
    with pytest.raises(ValueError):
        wh.Context().set_status(201)


def test_context_is_cancelled_once_its_deadline_passes():
    ctx = wh.Context(deadline=time.monotonic() + 0.02)
    assert not ctx.cancelled
    time.sleep(0.03)
    assert ctx.cancelled


def test_context_cancel_sets_cancelled():
    ctx = wh.Context()
    ctx.cancel()
    assert ctx.cancelled


def test_wait_cancelled_returns_false_after_its_timeout():
    ctx = wh.Context()
    start = time.monotonic()
    assert ctx.wait_cancelled(0.02) is False
    assert 0.015 <= time.monotonic() - start < 1.0


def test_wait_cancelled_wakes_when_another_thread_cancels():
    ctx = wh.Context()
    threading.Timer(0.02, ctx.cancel).start()
    start = time.monotonic()
    assert ctx.wait_cancelled(2.0) is True
    assert time.monotonic() - start < 1.0


def test_wait_cancelled_returns_true_at_the_deadline():
    ctx = wh.Context(deadline=time.monotonic() + 0.02)
    start = time.monotonic()
    assert ctx.wait_cancelled(2.0) is True
    assert time.monotonic() - start < 1.0


def test_wait_cancelled_rejects_a_negative_timeout():
    with pytest.raises(ValueError, match="timeout"):
        wh.Context().wait_cancelled(-1)


# -- Session -------------------------------------------------------------------------------------


def test_session_get_set_and_initial_values():
    session = wh.Session({"pool": "p"})
    assert session.get("pool") == "p"
    assert session.get("missing", 0) == 0
    session.set("client", 1)
    assert session.get("client") == 1


def test_session_is_safe_to_write_from_many_threads():
    session = wh.Session()

    def write(n: int) -> None:
        for i in range(200):
            session.set(f"{n}-{i}", i)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert all(session.get(f"{n}-199") == 199 for n in range(8))


# -- adapt / run_safely --------------------------------------------------------------------------


def _tracing(name, trail):
    def adapter(next_handler):
        def handler(job):
            trail.append(f"{name}>")
            result = next_handler(job)
            trail.append(f"<{name}")
            return result

        return handler

    return adapter


def test_adapt_makes_the_last_adapter_the_outermost():
    trail = []
    a, b = _tracing("a", trail), _tracing("b", trail)
    handler = wh.adapt(lambda job: trail.append("handler"), a, b)
    handler(wh.Job("h"))
    assert trail == ["b>", "a>", "handler", "<a", "<b"]


def test_adapt_without_adapters_returns_the_handler():
    def handler(job):
        return None

    assert wh.adapt(handler) is handler


def test_adapt_rejects_non_callables():
    with pytest.raises(TypeError, match="handler"):
        wh.adapt(42)
    with pytest.raises(TypeError, match="adapter"):
        wh.adapt(lambda job: None, "not an adapter")


def test_adapt_rejects_an_adapter_that_returns_a_non_handler():
    with pytest.raises(TypeError, match="not a handler"):
        wh.adapt(lambda job: None, lambda handler: None)


def test_run_safely_returns_the_exception_and_marks_the_job_internal_error():
    job = wh.Job("h")
    boom = RuntimeError("boom")

    def fail():
        raise boom

    assert wh.run_safely(fail, job) is boom
    assert job.ctx.status is wh.Status.INTERNAL_ERROR
    assert job.ctx.error is boom


def test_run_safely_returns_none_and_leaves_status_alone_on_success():
    job = wh.Job("h")
    calls = []
    assert wh.run_safely(lambda: calls.append(1), job) is None
    assert calls == [1]
    assert job.ctx.status is wh.Status.UNKNOWN


def test_run_safely_without_a_job_only_returns_the_exception():
    exc = wh.run_safely(lambda: 1 / 0)
    assert isinstance(exc, ZeroDivisionError)


def test_an_execution_that_sets_no_value_allocates_no_dict():
    seen: list[wh.Context] = []
    worker = wh.Worker(concurrency=1)
    worker.register("plain", lambda job: seen.append(job.ctx))
    with worker:
        worker.perform(wh.Job("plain")).wait(5)
    (ctx,) = seen
    assert type(ctx) is wh.Context and ctx._values is None and ctx.values() == {}
    assert ctx.status is wh.Status.SUCCESS


def test_context_fields_refuse_values_of_the_wrong_type():
    ctx = wh.Context()
    with pytest.raises(TypeError):
        ctx.deadline = "soon"  # type: ignore[assignment]
    with pytest.raises(TypeError):
        ctx._values = ["a"]  # type: ignore[assignment]
    with pytest.raises(TypeError, match="ctx.status must be an int"):
        ctx.status = "ok"  # type: ignore[assignment]
    assert ctx.status is wh.Status.UNKNOWN and ctx.deadline is None


def test_wait_cancelled_wakes_every_waiter_of_one_context_and_only_it():
    ctx, other = wh.Context(), wh.Context()
    results: list[tuple[str, bool]] = []

    def wait(name: str, c: wh.Context) -> None:
        results.append((name, c.wait_cancelled(0.5 if name == "other" else 5.0)))

    threads = [
        threading.Thread(target=wait, args=(name, c))
        for name, c in (("a", ctx), ("b", ctx), ("other", other))
    ]
    for t in threads:
        t.start()
    time.sleep(0.05)
    ctx.cancel()
    for t in threads:
        t.join(6)
    assert sorted(results) == [("a", True), ("b", True), ("other", False)]
    assert not other.cancelled


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: wh.Job(""), TypeError, "handler must be a non-empty str, got ''"),
        (lambda: wh.Job(3), TypeError, "handler must be a non-empty str, got 3"),
        (lambda: wh.Job("h", [1]), TypeError, "args must be a dict or None, got list"),
        (lambda: wh.Job("h", queue=""), TypeError, "queue must be a non-empty str"),
        (lambda: wh.Job("h", timeout=0), ValueError, "timeout must be > 0"),
        (lambda: wh.Job("h", timeout="1"), TypeError, "timeout must be a number"),
    ],
)
def test_job_refuses_bad_input_naming_the_field(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_job_takes_any_mapping_as_args_and_fields_refuse_the_wrong_type():
    from types import MappingProxyType

    job = wh.Job("h", MappingProxyType({"a": 1}), queue="q", timeout=2)
    assert job.args == {"a": 1} and type(job.args) is dict
    assert (job.handler, job.queue, job.timeout) == ("h", "q", 2.0)
    assert repr(job) == "Job('h', {'a': 1}, queue='q')"
    with pytest.raises(TypeError):
        job.args = [("a", 1)]  # type: ignore[assignment]
    with pytest.raises(TypeError):
        job.ctx = "not a context"  # type: ignore[assignment]


def test_a_subclass_of_job_keeps_its_own_fields_and_copies_as_a_plain_job():
    class Tagged(wh.Job):
        __slots__ = ("tag",)

    job = Tagged("h", {"n": [1]})
    job.tag = "t"
    job.ctx.set("seeded", 1)
    clone = job.copy()
    assert type(clone) is wh.Job and clone.args == {"n": [1]}
    assert clone.args["n"] is not job.args["n"]
    assert clone.ctx.get("seeded") is None  # a copy starts with a fresh context
    assert job.tag == "t" and job.ctx.get("seeded") == 1
