"""Redis keys of the queue gone (RELIABILITY.md row 14): an eviction policy other than
noeviction, a full Redis, and lease keys deleted by hand. A worker warns about the policy at
start; a full Redis under noeviction makes enqueue fail loudly; a run whose lease keys vanished
keeps running (its renewal puts the lease back) or, its worker dead, is recovered by the reaper.
A real redis-server of the test's own; the handlers' ledger is the truth."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from harness import LEASE, REAPER, App, reap, wait_for
from redis_server import RedisServer

import workhorse as wh

pytestmark = pytest.mark.timeout(60)

WARNING = "maxmemory-policy is allkeys-lru, but a queue needs noeviction"


def run_one_job(url: str, ns: str) -> None:
    """A worker with a sync and an async handler (two consumers) runs one job of each."""
    queue = wh.Queue.from_url(url, namespace=ns)
    worker = wh.Worker(concurrency=2, queue=queue)
    done: list[str] = []
    worker.register("sync", lambda job: done.append("sync"))

    @worker.handler("async")
    async def run_async(job: wh.Job) -> None:
        done.append("async")

    queue.enqueue("sync")
    queue.enqueue("async")
    try:
        assert worker.drain(10)
    finally:
        worker.stop(5)
    assert sorted(done) == ["async", "sync"]


def test_a_worker_warns_once_when_redis_may_evict_the_queues_keys(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    server = RedisServer(str(tmp_path), extra=("--maxmemory-policy", "allkeys-lru"))
    try:
        run_one_job(server.url, "lru")  # the check is made before the first claim
    finally:
        server.kill()
    err = capfd.readouterr().err
    assert err.count(WARNING) == 1, err  # once per queue, not per consumer


@pytest.mark.parametrize("server_kind", ["noeviction", "config_disabled"])
def test_no_warning_under_noeviction_or_when_config_is_refused(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], server_kind: str
) -> None:
    extra = ("--rename-command", "CONFIG", "") if server_kind == "config_disabled" else ()
    server = RedisServer(str(tmp_path), extra=extra)
    try:
        run_one_job(server.url, "quiet")
    finally:
        server.kill()
    assert "maxmemory-policy" not in capfd.readouterr().err


def test_a_full_redis_under_noeviction_makes_enqueue_fail_loudly(own_redis: RedisServer) -> None:
    info = own_redis.command("INFO", "memory").decode()
    used = int(next(line for line in info.split() if line.startswith("used_memory:")).split(":")[1])
    own_redis.command("CONFIG", "SET", "maxmemory", str(used + 2_000_000))
    queue = wh.Queue.from_url(own_redis.url, namespace="full")
    acked = 0
    with pytest.raises(wh.QueueError, match="OOM") as raised:
        for _ in range(1000):
            acked += len(queue.enqueue_many([("job", {"pad": "x" * 20_000})] * 20))
    assert acked > 0, raised.value
    # Nothing acknowledged was dropped: every one is there.
    (q,) = queue.client.queues()
    assert q.ready == acked


class Ledger:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rows: list[tuple[str, bool]] = []

    def add(self, job_id: str, cancelled: bool) -> None:
        with self._lock:
            self.rows.append((job_id, cancelled))

    def snapshot(self) -> list[tuple[str, bool]]:
        with self._lock:
            return list(self.rows)


DELETIONS = {
    "lease": ["run"],
    "lease+runinfo": ["run", "runinfo"],
    "lease+runinfo+attempts": ["run", "runinfo", "attempts"],
    "runinfo": ["runinfo"],
    "attempts": ["attempts"],
}


@pytest.mark.parametrize("deleted", list(DELETIONS))
def test_running_jobs_whose_lease_keys_were_deleted_finish_once(
    own_redis: RedisServer, deleted: str
) -> None:
    ns = "gone"
    queue = wh.Queue.from_url(own_redis.url, namespace=ns, lease=LEASE, reaper_interval=REAPER)
    worker = wh.Worker(concurrency=3, queue=queue)
    ledger = Ledger()

    @worker.handler("slow", max_fails=5)
    def slow(job: wh.Job) -> None:
        deadline = time.monotonic() + 3 * LEASE  # several renewals after the deletion
        while time.monotonic() < deadline and not job.ctx.cancelled:
            time.sleep(0.01)
        ledger.add(job.id, job.ctx.cancelled)

    ids = {queue.enqueue("slow").id for _ in range(3)}
    worker.start()
    try:
        assert wait_for(lambda: len(queue.client.busy_workers()) == 3, 10)
        for key in DELETIONS[deleted]:
            if key == "run":
                own_redis.command("DEL", f"{{{ns}}}:run:slow")
            else:
                own_redis.command("HDEL", f"{{{ns}}}:{key}", *ids)
        assert wait_for(lambda: len(ledger.snapshot()) >= 3, 20)
        assert worker.drain(10)
    finally:
        worker.stop(5)
    # Each ran once and to its end: no lease was lost, nothing was reaped or refused.
    assert sorted(ledger.snapshot()) == sorted((i, False) for i in ids)
    stats = queue.client.stats()
    assert (stats["processed"], stats["reaped"], stats["stale_acks"]) == (3, 0, 0), stats
    assert [(q.ready, q.running, q.retry, q.dead) for q in queue.client.queues()] == [(0, 0, 0, 0)]


def test_a_killed_workers_job_whose_lease_was_deleted_is_recovered(
    app: App, own_redis: RedisServer
) -> None:
    queue = app.queue()
    job = queue.enqueue("slow", {"seconds": 30})
    holder = app.holder("holder")
    try:
        assert wait_for(lambda: app.phases("start"), 20)
        holder.kill()
        holder.wait(10)
    finally:
        reap(holder)
    killed_at = time.monotonic()
    own_redis.command("DEL", f"{{{app.ns}}}:run:slow")  # no lease left to expire
    second = wh.Worker(concurrency=2, queue=queue)
    reruns: list[tuple[str, int, float]] = []

    @second.handler("slow", max_fails=5)
    def slow(j: wh.Job) -> None:
        reruns.append((j.id, j.fails, time.monotonic()))

    second.start()
    try:
        # The reaper puts the lease back from the run info (one lease from then), then reaps
        # it: within L + 2R, plus slack.
        assert wait_for(lambda: reruns, LEASE + 2 * REAPER + 5)
    finally:
        second.stop(5)
    (rid, fails, at) = reruns[0]
    assert rid == job.id and fails == 1
    assert at - killed_at <= LEASE + 2 * REAPER + 2.0, at - killed_at
    assert queue.client.stats()["reaped"] == 1
