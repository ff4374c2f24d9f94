"""A process whose wall clock is 60 s off (RELIABILITY.md row 19), injected for real with
libfaketime into a worker or client subprocess (only wall time: its monotonic clock is true).

Leases, reaping and due times are decided by Redis's `TIME` inside the scripts, and delays are
counted by Redis from when it stores the job; the local clock only measures how long to wait
(monotonic). So a skewed reaper neither reaps a healthy run early nor misses a dead worker's, and
a skewed client's `enqueue_at` / `enqueue_in` jobs fire when Redis's clock says. The ledger is the
truth; times are read in this (true-clock) process.

The skewed scripts never call time.sleep: libfaketime 0.9.10 makes it fail (EINVAL) when the
monotonic clock is left alone (FAKETIME_DONT_FAKE_MONOTONIC=1); they wait on events instead.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from typing import Any

import pytest
from harness import FAKETIME_LIB, App, reap, skewed, wait_for

import workhorse as wh

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        FAKETIME_LIB is None,
        reason="libfaketime is not installed (apt-get install faketime; .ci/run installs it)",
    ),
]

SKEWS = ["+60s", "-60s"]


def seconds(offset: str) -> float:
    return float(offset.rstrip("s"))


def skewed_worker(app: App, name: str, offset: str, lease: float, reaper: float) -> Any:
    """A worker process (app.make) whose wall clock is `offset` off; it writes its own
    time.time() to `<name>.ready` once started."""
    return app.script(
        name,
        f"""
        import threading, time, app, workhorse as wh
        q = wh.Queue.from_url({app.url!r}, namespace={app.ns!r}, lease={lease},
                              reaper_interval={reaper})
        w = app.make(concurrency=2, queue=q)
        w.start()
        with open({name!r} + ".ready", "w") as f:
            f.write(repr(time.time()))
        threading.Event().wait(600)
        """,
        env=skewed(offset),
    )


def wait_ready(app: App, name: str, offset: str) -> None:
    """Wait for a skewed process to be up, and check that its clock is off as asked."""
    ready = app.cwd / f"{name}.ready"
    assert wait_for(lambda: ready.exists() and ready.read_text(), 30), f"{name} never started"
    off = float(ready.read_text()) - time.time()
    assert abs(off - seconds(offset)) < 5, f"libfaketime did not skew the clock: {off:+.1f} s"


@pytest.mark.parametrize("offset", SKEWS)
def test_a_skewed_reaper_does_not_reap_a_healthy_workers_job_early(app: App, offset: str) -> None:
    lease = 2.0
    queue = app.queue(lease=lease)
    job = queue.enqueue("slow", {"seconds": 2.5 * lease})
    healthy = app.holder("healthy", lease=lease, reaper=3600)
    skew = skewed_worker(app, "skewed", offset, lease=lease, reaper=0.05)
    try:
        assert wait_for(lambda: app.phases("start"), 30)
        wait_ready(app, "skewed", offset)
        # Both pools heartbeat: the skewed one is up and reaps every 50 ms meanwhile.
        assert wait_for(lambda: len(queue.client.worker_pools()) == 2, 10)
        assert not app.phases("end"), "the job ended before the skewed reaper was up"
        assert wait_for(lambda: app.phases("end"), 3 * lease + 10)
        assert wait_for(lambda: queue.client.stats()["processed"] == 1, 10)  # acked
        assert skew.poll() is None, "the skewed worker died"
    finally:
        reap(healthy)
        reap(skew)
    (start,) = app.phases("start")
    (end,) = app.phases("end")
    assert start["id"] == end["id"] == job.id and not end["cancelled"]
    stats = queue.client.stats()
    assert (stats["reaped"], stats["stale_acks"], stats["processed"]) == (0, 0, 1), stats


@pytest.mark.parametrize("offset", SKEWS)
def test_a_skewed_reaper_recovers_a_killed_workers_job_within_the_bound(
    app: App, offset: str
) -> None:
    lease, reaper = 1.0, 0.2
    bound = lease + reaper + 2.0
    queue = app.queue(lease=lease, reaper=reaper)
    job = queue.enqueue("slow", {"seconds": 30})
    healthy = app.holder("healthy", lease=lease, reaper=3600)
    skew = None
    try:
        assert wait_for(lambda: app.phases("start"), 30)
        skew = skewed_worker(app, "skewed", offset, lease=lease, reaper=reaper)
        wait_ready(app, "skewed", offset)
        healthy.kill()
        healthy.wait(10)
        killed_at = time.monotonic()
        assert wait_for(lambda: len(app.phases("start")) == 2, bound + 5)
        took = time.monotonic() - killed_at
        assert skew.poll() is None, "the skewed worker died"
    finally:
        reap(healthy)
        if skew is not None:
            reap(skew)
    first, again = app.phases("start")
    assert first["pid"] == healthy.pid and again["pid"] == skew.pid
    assert again["id"] == job.id and again["fails"] == 1
    assert took <= bound, took


@pytest.mark.parametrize("offset", SKEWS)
def test_jobs_scheduled_by_a_skewed_client_fire_when_redis_says(app: App, offset: str) -> None:
    queue = app.queue()
    worker = wh.Worker(concurrency=2, queue=queue)
    ran: dict[str, float] = {}
    worker.register("tick", lambda job: ran.setdefault(job.args["k"], time.time()))
    worker.start()
    when = time.time() + 8  # the client is up and has enqueued well before this
    client = app.script(
        "client",
        f"""
        import json, time, workhorse as wh
        q = wh.Queue.from_url({app.url!r}, namespace={app.ns!r})
        at = q.enqueue_at("tick", {when!r}, {{"k": "at"}})
        later = q.enqueue_in("tick", 2.0, {{"k": "in"}})
        print(json.dumps({{"clock": time.time(), "at": at.run_at, "in": later.run_at,
                          "in_enqueued": later.enqueued_at}}))
        """,
        env=skewed(offset),
        stdout=subprocess.PIPE,
    )
    try:
        out, _ = client.communicate(timeout=30)
        seen = json.loads(out)
        sent = time.time()
        assert abs(seen["clock"] - sent - seconds(offset)) < 5, "the client's clock is not off"
        assert sent < when - 1, "the client took too long to start: the test proves nothing"
        # Due times as Redis stores them: the absolute time as given, the delay from Redis's now.
        assert seen["at"] == pytest.approx(when, abs=0.01)
        assert seen["in"] - seen["in_enqueued"] == pytest.approx(2.0, abs=0.01)
        assert wait_for(lambda: len(ran) == 2, when - time.time() + 5)
    finally:
        worker.stop(5)
        reap(client)
    # Not early, and on time (a loaded machine gets a second of slack).
    assert when - 0.05 <= ran["at"] <= when + 1.0, ran["at"] - when
    assert seen["in"] - 0.05 <= ran["in"] <= seen["in"] + 1.0, ran["in"] - seen["in"]


def test_a_skewed_workers_cron_reschedule_lands_on_redis_slots(app: App) -> None:
    # Seconds-field cron slots repeat every minute, so a skew of exactly 60 s cannot show: the
    # worker's clock is 61 s ahead here. Slots every 2 s: by Redis's clock the job is due at an
    # even second; by the worker's own clock it would be due at an odd one.
    queue = app.queue()
    worker = app.script(
        "cron",
        textwrap.dedent(
            f"""
            import threading, workhorse as wh
            q = wh.Queue.from_url({app.url!r}, namespace={app.ns!r})
            w = wh.Worker(concurrency=1, queue=q)
            w.register("tick", lambda job: wh.Result.reschedule(cron="*/2 * * * * *"))
            w.start()
            threading.Event().wait(600)
            """
        ),
        env=skewed("+61s"),
    )
    try:
        job = queue.enqueue("tick")
        assert wait_for(lambda: queue.client.scheduled_jobs().total == 1, 30)
        (again,) = queue.client.scheduled_jobs().jobs
    finally:
        reap(worker)
    assert again.id == job.id
    # Due at the slot plus the moment the ack took to reach Redis.
    assert 0 <= again.run_at % 2 < 0.5, again.run_at
