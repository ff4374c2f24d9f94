"""Leases: a running job keeps its lease however long it runs; a job whose worker died is reaped
once its lease expired and runs again (a lost run counts as a failure). A worker can only die
with its process, and memory:// lives in one, so the reaping tests run on redis:// only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from queue_fixtures import *  # noqa: F403
from queue_fixtures import info, settle

import workhorse as wh

pytestmark = pytest.mark.timeout(30)

LEASE = 1.0
REAPER = 0.2

CHILD = textwrap.dedent(
    """
    import pathlib, sys, time
    import workhorse as wh

    url, namespace, marker = sys.argv[1:4]
    queue = wh.Queue.from_url(url, namespace=namespace, lease={lease}, reaper_interval={reaper})
    worker = wh.Worker(concurrency=1, queue=queue, grace=0.1)

    @worker.handler("victim", backoff=lambda job: 0.05)
    def victim(job):
        pathlib.Path(marker).write_text(job.id)
        time.sleep(60)

    worker.start()
    time.sleep(60)
    """
).format(lease=LEASE, reaper=REAPER)


def test_a_job_running_longer_than_its_lease_keeps_it(open_queue, runs):
    queue = open_queue(lease=LEASE, reaper_interval=REAPER)
    worker = wh.Worker(concurrency=2, queue=queue, grace=1.0)

    @worker.handler("long")
    def long(job):
        runs.add(job)
        time.sleep(2.5 * LEASE)

    try:
        queue.enqueue("long")
        worker.start()
        assert runs.wait_for(1, 3)
        assert worker.drain(10)
        time.sleep(2 * REAPER)
        assert len(runs) == 1
        stats = queue.client.stats()
        assert stats["reaped"] == 0 and stats["stale_acks"] == 0
        assert stats["processed"] == 1
    finally:
        worker.stop(3)


def test_a_job_of_a_killed_worker_is_reaped_and_runs_again(
    queue_backend, open_queue, tmp_path, runs
):
    if queue_backend != "redis":
        pytest.skip("a worker dies with its process; memory:// is not shared across processes")
    queue = open_queue(lease=LEASE, reaper_interval=REAPER)
    marker = tmp_path / "claimed"
    queued = queue.enqueue("victim", {"n": 1})
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, open_queue.url, open_queue.namespace, str(marker)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert settle(marker.exists, 10), child.stderr and child.poll()
        assert marker.read_text() == queued.id
        assert info(queue, "victim").running == 1
        os.kill(child.pid, signal.SIGKILL)
        child.wait(5)
        killed = time.monotonic()
        worker = wh.Worker(concurrency=1, queue=queue, grace=1.0)
        worker.handler("victim", backoff=lambda job: 0.05)(runs.add)
        try:
            worker.start()
            assert runs.wait_for(1, LEASE + REAPER + 5)
            again = runs.snapshot()[0]
            assert again["id"] == queued.id
            assert again["args"] == {"n": 1}
            assert again["mono"] - killed <= LEASE + REAPER + 3
            assert again["fails"] == 1  # the lost run counts
            assert worker.drain(5)
            assert settle(lambda: queue.client.stats()["reaped"] >= 1)
            q = info(queue, "victim")
            assert (q.ready, q.running, q.retry, q.dead) == (0, 0, 0, 0)
        finally:
            worker.stop(3)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)


def test_a_killed_workers_pool_entry_stops_heartbeating(queue_backend, open_queue, tmp_path):
    if queue_backend != "redis":
        pytest.skip("a worker dies with its process; memory:// is not shared across processes")
    queue = open_queue(lease=LEASE, reaper_interval=REAPER)
    marker = tmp_path / "claimed"
    queue.enqueue("victim")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, open_queue.url, open_queue.namespace, str(marker)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert settle(marker.exists, 10)
        pools = settle(lambda: [p for p in queue.client.worker_pools() if p.pid == child.pid])
        assert pools and sorted(pools[0].names) == ["victim"]
        os.kill(child.pid, signal.SIGKILL)
        child.wait(5)
        beat = pools[0].heartbeat_at
        time.sleep(2 * LEASE)
        now = [p for p in queue.client.worker_pools() if p.pid == child.pid]
        assert not now or now[0].heartbeat_at == beat
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)
