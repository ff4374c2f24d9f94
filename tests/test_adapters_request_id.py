"""request_id: every execution carries an id, kept from the job or the context, else new."""

from __future__ import annotations

import re

import pytest
from support import run

from workhorse.adapters import REQUEST_ID, request_id
from workhorse.adapters.request_id import new_request_id
from workhorse.job import Context, Job
from workhorse.middleware import Handler, adapt, apply_status_rules, is_async_handler
from workhorse.status import Status


def seen_by_handler() -> tuple[Handler, list[str]]:
    seen: list[str] = []

    def handler(job: Job) -> None:
        seen.append(job.ctx.get(REQUEST_ID))

    return adapt(apply_status_rules(handler), request_id()), seen


def test_a_new_id_for_every_execution() -> None:
    h, seen = seen_by_handler()
    run(h, Job("h"))
    run(h, Job("h"))
    assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in seen)
    assert seen[0] != seen[1]


def test_keeps_the_id_the_job_carries() -> None:
    h, seen = seen_by_handler()
    run(h, Job("h", {"request_id": "req-1"}))
    assert seen == ["req-1"]

    job = Job("h", {"X-Request-Id": "req-2"})
    run(adapt(apply_status_rules(lambda job: None), request_id("X-Request-Id")), job)
    assert job.ctx.get(REQUEST_ID) == "req-2"


def test_keeps_an_id_already_on_the_context() -> None:
    h, seen = seen_by_handler()
    job = Job("h", {"request_id": "from-args"})
    job.ctx.set(REQUEST_ID, "from-ctx")
    run(h, job)
    assert seen == ["from-ctx"]


def test_async_handler_stays_async() -> None:
    async def handler(job: Job) -> None:
        assert job.ctx.get(REQUEST_ID) == "r"

    h = adapt(apply_status_rules(handler), request_id())
    assert is_async_handler(h)
    assert run(h, Job("h", {"request_id": "r"})) == Status.SUCCESS


def test_invalid_header_is_rejected() -> None:
    with pytest.raises(TypeError):
        request_id("")


def test_the_id_is_current_while_the_handler_runs_even_when_it_raises() -> None:
    from workhorse.adapters.request_id import _current

    seen: list[str | None] = []

    def handler(job: Job) -> None:
        seen.append(_current.get())
        raise RuntimeError("boom")

    h = adapt(apply_status_rules(handler), request_id())
    job = Job("h", {"request_id": "r-1"})
    assert run(h, job) == Status.INTERNAL_ERROR
    assert seen == ["r-1"]
    assert _current.get() is None

    bare = request_id()(handler)  # no status rules: the error passes through, the id is reset
    with pytest.raises(RuntimeError):
        bare(Job("h", {"request_id": "r-2"}))
    assert _current.get() is None


def test_a_falsy_id_is_replaced_and_a_non_str_arg_is_made_a_str() -> None:
    h, seen = seen_by_handler()
    job = Job("h", {"request_id": 42})
    job.ctx.set(REQUEST_ID, "")
    run(h, job)
    assert seen == ["42"]
    run(h, Job("h", {"request_id": ""}))
    assert re.fullmatch(r"[0-9a-f]{32}", seen[1])


def test_a_job_like_object_gets_the_same_rules() -> None:
    class LikeAJob:
        handler = "duck"

        def __init__(self, args: dict[str, object]) -> None:
            self.args = args
            self.ctx = Context()

    seen: list[str] = []
    h = request_id()(lambda job: seen.append(job.ctx.get(REQUEST_ID)))
    h(LikeAJob({"request_id": "given"}))  # type: ignore[arg-type]
    h(LikeAJob({}))  # type: ignore[arg-type]
    assert seen[0] == "given"
    assert re.fullmatch(r"[0-9a-f]{32}", seen[1])


def test_ids_count_up_from_a_random_prefix_drawn_again_in_a_forked_child() -> None:
    import os

    first, second = new_request_id(), new_request_id()
    assert first[:16] == second[:16]
    assert int(second[16:], 16) == int(first[16:], 16) + 1
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.write(write, new_request_id().encode())
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert re.fullmatch(r"[0-9a-f]{32}", child)
    assert child[:16] != first[:16]
    assert int(child[16:], 16) == 1


def test_a_bad_prefix_is_refused() -> None:
    from workhorse import _core

    for prefix in ("", "xyz", "0" * 15, "g" * 16):
        with pytest.raises(ValueError, match="16 hex digits"):
            _core.seed_request_ids(prefix)


def test_a_cycle_through_the_wrapped_handler_is_collected() -> None:
    import gc
    import weakref

    class Service:
        def handle(self, job: Job) -> None:
            return None

    service = Service()
    service.chain = request_id()(service.handle)  # type: ignore[attr-defined]
    gone = weakref.ref(service)
    del service
    gc.collect()
    assert gone() is None


def test_the_wrappers_of_the_core_name_their_handler() -> None:
    from prometheus_client import CollectorRegistry

    from workhorse.adapters import health, prometheus

    def send_email(job: Job) -> None:
        return None

    for adapter in (request_id(), prometheus(registry=CollectorRegistry()), health()):
        assert "send_email" in repr(adapter(send_email))
