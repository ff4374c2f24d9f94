"""A payload that is not a JSON object (corrupted, or written by hand into the store) goes to the
dead set with its reason; it never hangs a worker or loops through retries."""

from __future__ import annotations

import pytest

import workhorse as wh
from workhorse import _core

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("payload", ["not json", "[1, 2]", '"text"'])
@pytest.mark.parametrize("is_async", [False, True])
def test_an_undecodable_payload_goes_dead_with_its_reason(payload, is_async, make_queue):
    queue = make_queue()
    worker = wh.Worker(concurrency=2, queue=queue)
    ran = []
    if is_async:

        async def handler(job):
            ran.append(job.id)

    else:

        def handler(job):
            ran.append(job.id)

    worker.register("job", handler)
    # Written past the API's checks, as a corrupted store would hold it.
    queue._core.enqueue([(_core.new_job_id(), "job", payload, 0.0, None, None, None)])
    good = queue.enqueue("job", {"ok": True})
    assert worker.drain(5)
    worker.stop(2)
    assert ran == [good.id]
    (dead,) = queue.client.dead_jobs().jobs
    assert "undecodable job payload" in (dead.reason or "")
    assert dead.args == {"<undecodable>": payload}  # shown as it is, the page still reads
