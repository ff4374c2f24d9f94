"""Crashes and panics at named places in the core (rust/src/failpoints.rs), in real worker
processes on a real redis-server, with the ledger file as the truth (RELIABILITY.md rows 2, 3
and 20)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from harness import BOUND, App, fired_at, reap, wait_for

pytestmark = pytest.mark.timeout(90)

FAILPOINTS = "WORKHORSE_FAILPOINTS"


def crash_and_rescue(app: App, failpoint: str) -> tuple[float, int, int]:
    """A worker process (L = 1 s, R = 0.2 s) that dies at `failpoint` with `_exit(137)` while it
    holds the one job there is, then a second one, parked until then, that must recover it.
    Returns (the crash's wall time, the crasher's pid, the rescuer's pid)."""
    rescuer = app.holder("rescuer", extra="app.gate('rescuer')")
    crasher = None
    try:
        assert wait_for(lambda: app.gated("rescuer"), 30), "the rescuer never started"
        with open(app.cwd / "crasher.err", "w") as err:
            crasher = app.holder(
                "crasher", env={**app.env, FAILPOINTS: f"{failpoint}=exit"}, stderr=err
            )
            assert crasher.wait(30) == 137
        crashed_at = fired_at((app.cwd / "crasher.err").read_text(), failpoint)
        app.open_gate("rescuer")
        queue = app.queue()

        def rescued() -> bool:  # run, and acked (a handler's end is noted before its ack)
            ends = app.phases("end")
            return bool(ends) and ends[-1]["pid"] == rescuer.pid and (
                queue.client.stats()["processed"] >= 1
            )

        assert wait_for(rescued, BOUND + 15), app.ledger()
    finally:
        reap(rescuer)
        if crasher is not None:
            reap(crasher)
    return crashed_at, crasher.pid, rescuer.pid


def assert_done_once(app: App) -> None:
    queue = app.queue()
    stats = queue.client.stats()
    assert (stats["reaped"], stats["processed"], stats["stale_acks"]) == (1, 1, 0), stats
    assert [(q.ready, q.running, q.retry, q.dead) for q in queue.client.queues()] == [
        (0, 0, 0, 0)
    ]


def test_a_worker_that_dies_between_claim_and_start_loses_nothing(app: App) -> None:
    # Row 2: the fetch script returned the claim, the process dies before the run starts. The
    # lease runs out and another worker's reaper hands the job on within B = L + R + 2 s; the
    # ledger shows one start, in the rescuer (the lost claim counts as a failed attempt: the
    # reaper cannot tell a claim that never started from a run that died).
    job = app.queue().enqueue("slow", {"seconds": 0})
    crashed_at, _crasher, rescuer = crash_and_rescue(app, "after_claim")
    starts = app.phases("start")
    assert [(s["id"], s["pid"], s["fails"]) for s in starts] == [(job.id, rescuer, 1)]
    assert starts[0]["t"] - crashed_at <= BOUND, starts[0]["t"] - crashed_at
    assert_done_once(app)


def test_a_worker_that_dies_before_its_ack_causes_one_rerun_seen_as_a_retry(app: App) -> None:
    # Row 3: the handler ran to its end, the process dies before the ack batch is sent. At most
    # one duplicate, and the handler can tell: the second run sees fails + 1.
    job = app.queue().enqueue("slow", {"seconds": 0})
    crashed_at, crasher, rescuer = crash_and_rescue(app, "before_ack")
    runs = [(e["phase"], e["pid"], e["fails"]) for e in app.ledger() if e["id"] == job.id]
    assert runs == [
        ("start", crasher, 0),
        ("end", crasher, 0),
        ("start", rescuer, 1),
        ("end", rescuer, 1),
    ]
    rerun = app.phases("start")[1]["t"]
    assert rerun - crashed_at <= BOUND, rerun - crashed_at
    assert_done_once(app)


@pytest.mark.parametrize("burst", [False, True], ids=["run", "burst"])
def test_a_panic_in_the_queue_consumer_ends_the_command_with_70_within_5_s(
    app: App, burst: bool
) -> None:
    # Row 20: a panic in the consumer loop (its third turn, with a job running). The command does
    # not idle on: it logs CRITICAL, cancels and releases the running job, exits 70, within 5 s
    # of the panic.
    queue = app.queue()
    queue.enqueue("slow", {"seconds": 60})
    proc = app.command(*(["--burst"] if burst else []), env={FAILPOINTS: "consume_loop=panic@3"})
    try:
        _out, err = proc.communicate(timeout=60)
        exited_at = time.time()
    finally:
        reap(proc)
    assert proc.returncode == 70, err
    panicked_at = fired_at(err, "consume_loop")
    assert exited_at - panicked_at < 5.0, exited_at - panicked_at
    assert "CRITICAL" in err and "panic in the core's queue consumer" in err, err
    # The run was cancelled, and released (unattempted) rather than left to the reaper.
    assert [(e["phase"], e["fails"], e.get("cancelled")) for e in app.ledger()] == [
        ("start", 0, None),
        ("end", 0, True),
    ]
    (info,) = queue.client.queues()
    assert (info.ready, info.running) == (1, 0), info
    assert queue.client.stats()["reaped"] == 0


LIBRARY = """
import json, sys, time, app, workhorse as wh

q = wh.Queue.from_url(sys.argv[1], namespace=sys.argv[2], lease=1.0, reaper_interval=0.2)
w = app.make(queue=q)
w.start()
out = {}
try:
    w.wait(30)
    out["wait"] = "returned"
except wh.WorkerFailed as exc:
    out.update(wait="raised", t=time.time(), error=str(exc), same=w.failed is exc,
               panics=w.stats()["core_panics"])
try:
    w.drain(5)
    out["drain"] = "returned"
except wh.WorkerFailed:
    out["drain"] = "raised"
out["stopped"] = w.stop(5)
print(json.dumps(out), flush=True)
"""


def test_a_panic_in_the_lease_renewer_fails_the_worker_for_a_library_user(app: App) -> None:
    # Row 20 for a program that holds a Worker: the renewer task panics (its third round, 1 s
    # in) while a job runs; the consumer would go on claiming jobs whose leases nobody renews.
    # wait() and drain() raise WorkerFailed within 5 s, worker.failed is that error, the panic
    # is counted, and the job is released, not left for the reaper.
    queue = app.queue()
    queue.enqueue("slow", {"seconds": 60})
    script = app.cwd / "library.py"
    script.write_text(LIBRARY)
    proc = subprocess.run(
        [sys.executable, str(script), app.url, app.ns],
        cwd=app.cwd,
        env={**app.env, FAILPOINTS: "renew=panic@3"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    panicked_at = fired_at(proc.stderr, "renew")
    assert out["wait"] == "raised" and out["drain"] == "raised", out
    assert out["t"] - panicked_at < 5.0, out["t"] - panicked_at
    assert out["same"] and out["panics"] == 1, out
    assert "panic in the core's lease renewer: failpoint renew" in out["error"]
    assert "1 running queued jobs are cancelled and released" in proc.stderr  # logged
    assert out["stopped"] is True
    ledger = [(e["phase"], e["fails"], e.get("cancelled")) for e in app.ledger()]
    assert ledger == [("start", 0, None), ("end", 0, True)], ledger
    (info,) = queue.client.queues()
    assert (info.ready, info.running) == (1, 0), info
    assert queue.client.stats()["reaped"] == 0
