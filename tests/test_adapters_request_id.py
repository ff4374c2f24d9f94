"""request_id: every execution carries an id, kept from the job or the context, else new."""

from __future__ import annotations

import re

import pytest
from support import run

from workhorse.adapters import REQUEST_ID, request_id
from workhorse.job import Job
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
