"""Workers as real processes under kill -9, SIGSTOP and SIGTERM, with the ledger as the truth
(RELIABILITY.md rows 1, 4 and 6), and the command line's round trips on the same harness."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from harness import BOUND, LEASE, REAPER, App, reap, wait_for

import workhorse as wh

pytestmark = pytest.mark.timeout(90)


def test_a_killed_workers_job_is_reaped_and_rerun_within_the_bound(app: App) -> None:
    queue = app.queue()
    job = queue.enqueue("slow", {"seconds": 30})
    # A worker process that holds the job under a short lease, then dies with SIGKILL.
    holder = app.holder("holder")
    try:
        assert wait_for(lambda: app.phases("start"), 20)
        killed_at = time.time()
        holder.kill()
        holder.wait(10)
    finally:
        reap(holder)
    # A second worker (same short lease) reaps it and runs it again; make it quick this time.
    second = wh.Worker(concurrency=2, queue=queue)
    reruns = []

    @second.handler("slow", max_fails=5)
    def slow(j):
        reruns.append((j.id, j.fails, time.time()))

    second.start()
    try:
        assert wait_for(lambda: reruns, LEASE + REAPER + 5)
    finally:
        second.stop(5)
    (rid, fails, at) = reruns[0]
    assert rid == job.id and fails == 1  # the lost run counts as a failure
    assert at - killed_at <= BOUND
    assert queue.client.stats()["reaped"] >= 1
    assert [q.ready + q.running + q.retry for q in queue.client.queues()] == [0]


def test_a_frozen_workers_ack_is_refused_after_another_took_the_job(app: App) -> None:
    queue = app.queue()
    job = queue.enqueue("slow", {"seconds": 2 * LEASE + 1})
    frozen = app.holder("frozen", reaper=3600)
    try:
        assert wait_for(lambda: app.phases("start"), 20)
        os.kill(frozen.pid, signal.SIGSTOP)  # no renewals: the lease runs out
        time.sleep(LEASE + 0.3)
        other = wh.Worker(concurrency=1, queue=queue)
        done = []
        other.register("slow", lambda j: done.append((j.id, j.fails)))
        other.start()
        assert wait_for(lambda: done, 10)
        other.stop(5)
        os.kill(frozen.pid, signal.SIGCONT)  # the zombie wakes up and finishes its run
        assert wait_for(lambda: queue.client.stats()["stale_acks"] >= 1, 15)
    finally:
        reap(frozen)
    assert done == [(job.id, 1)]
    stats = queue.client.stats()
    assert stats["stale_acks"] >= 1
    # Exactly one final state: completed once, nothing left anywhere.
    assert [(q.ready, q.running, q.retry, q.dead) for q in queue.client.queues()] == [(0, 0, 0, 0)]


def test_sigterm_lets_a_short_job_finish_and_the_command_exits_cleanly(app: App) -> None:
    queue = app.queue()
    queue.enqueue("slow", {"seconds": 0.3})
    worker = app.command()
    try:
        assert wait_for(lambda: app.phases("start"), 20)
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=20)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err
    assert [e["phase"] for e in app.ledger()] == ["start", "end"]
    assert queue.client.stats()["processed"] == 1


def test_enqueue_info_pause_and_burst_from_the_command_line(app: App) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "workhorse", "--url", app.url, "--namespace", app.ns]
            + list(args),
            capture_output=True,
            text=True,
            timeout=30,
            cwd=app.cwd,
            env=app.env,
        )

    assert cli("enqueue", "slow", '{"seconds": 0}').returncode == 0
    assert cli("pause", "slow").returncode == 0
    info = cli("info")
    assert info.returncode == 0
    row = next(line for line in info.stdout.splitlines() if line.startswith("slow"))
    assert row.split()[1] == "1" and row.split()[-1] == "yes"  # ready 1, paused
    assert cli("unpause", "slow").returncode == 0
    burst = cli("worker", "app:make", "--burst")
    assert burst.returncode == 0, burst.stderr
    assert [e["phase"] for e in app.ledger()] == ["start", "end"]
    assert cli("dead", "retry", "--all").stdout.strip() == "retried 0 dead job(s)"
