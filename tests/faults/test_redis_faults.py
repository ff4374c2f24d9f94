"""The Redis backend when Redis itself misbehaves: a restart (kill -9, AOF on) and connections
killed under load. Workers reconnect and go on; nothing acknowledged is lost. A real
redis-server of the test's own; the handlers' ledger (a list in this process) is the truth."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from redis_server import RedisServer, RespError

import workhorse as wh

pytestmark = pytest.mark.timeout(120)


class Ran:
    """The `i` argument of every run that ended, in order (thread-safe): the ledger."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done: list[int] = []

    def add(self, i: int) -> None:
        with self._lock:
            self._done.append(i)

    def done(self) -> list[int]:
        with self._lock:
            return list(self._done)


def recording_worker(
    url: str, ns: str, concurrency: int, max_fails: int, backoff: float, work: float = 0.0
) -> tuple[wh.Queue, wh.Worker, Ran]:
    """A queue (L = 2 s, R = 0.2 s) and a worker whose "job" handler records its `i` argument."""
    queue = wh.Queue.from_url(url, namespace=ns, lease=2.0, reaper_interval=0.2)
    worker = wh.Worker(concurrency=concurrency, queue=queue)
    ran = Ran()

    @worker.handler("job", max_fails=max_fails, backoff=lambda job: backoff)
    def job(j: wh.Job) -> None:
        if work:
            time.sleep(work)
        ran.add(j.args["i"])

    return queue, worker, ran


def test_workers_reconnect_after_a_redis_restart_and_lose_no_acknowledged_enqueue(
    aof_redis: RedisServer,
) -> None:
    queue, worker, ran = recording_worker(aof_redis.url, "restart", 4, max_fails=10, backoff=0.1)

    acked = [queue.enqueue("job", {"i": i}).args["i"] for i in range(50)]
    later = queue.enqueue_in("job", 1.5, {"i": 1000})  # scheduled across the restart
    worker.start()
    assert worker.drain(20)
    aof_redis.kill()  # kill -9: the worker's connections break mid-wait
    time.sleep(0.5)
    aof_redis.start()
    # Enqueued and acknowledged after the restart: must run too.
    deadline = time.monotonic() + 10
    while True:
        try:
            acked += [queue.enqueue("job", {"i": i}).args["i"] for i in range(50, 100)]
            break
        except wh.QueueError:
            assert time.monotonic() < deadline, "enqueue never worked again"
            time.sleep(0.2)
    end = time.monotonic() + 20
    while time.monotonic() < end:
        if set(acked) | {later.args["i"]} <= set(ran.done()):
            break
        time.sleep(0.05)
    worker.stop(5)
    done = ran.done()
    assert set(acked) <= set(done), sorted(set(acked) - set(done))
    assert 1000 in done, "the scheduled job did not fire after the restart"


@pytest.mark.slow
def test_jobs_all_complete_while_connections_are_killed(own_redis: RedisServer) -> None:
    # RELIABILITY.md row 10: CLIENT KILL TYPE normal every 200 ms while jobs are enqueued and
    # run for 30 s. Every acknowledged enqueue completes; duplicates need a refused
    # or lost ack.
    server = own_redis
    queue, worker, ran = recording_worker(
        server.url, "kill", 8, max_fails=50, backoff=0.05, work=0.002
    )

    acked: list[int] = []
    killed = 0
    stop = threading.Event()

    def killer() -> None:
        nonlocal killed
        while not stop.wait(0.2):
            try:
                killed += int(server.command("CLIENT", "KILL", "TYPE", "normal"))
            except (OSError, RespError):
                pass

    threading.Thread(target=killer, daemon=True).start()
    worker.start()
    n, end = 0, time.monotonic() + 30
    while time.monotonic() < end:
        try:
            queue.enqueue_many([("job", {"i": n + k}) for k in range(20)])
            acked.extend(range(n, n + 20))
        except wh.QueueError:
            pass  # ambiguous: maybe stored, maybe not; only acknowledged ones must run
        n += 20
        time.sleep(0.05)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if set(acked) <= set(ran.done()):
            break
        time.sleep(0.05)
    stop.set()
    worker.stop(5)
    assert killed >= 60, f"only {killed} connections were killed"
    done = ran.done()
    missing = set(acked) - set(done)
    assert not missing, f"{len(missing)} acknowledged jobs never completed"
    stats = queue.client.stats()
    duplicates = len(done) - len(set(done))
    assert duplicates <= stats["stale_acks"] + stats["reaped"], (duplicates, stats)


def test_a_handler_holding_the_gil_past_its_lease_keeps_its_lease(redis_server):
    # RELIABILITY.md row 7: leases are renewed from tokio, which never waits for the GIL, so a
    # handler stuck in a C call that holds it for several leases is not taken for dead.
    import re

    lease = 0.5
    n, took = 20, 0.0
    while took < 0.05:  # calibrate the catastrophic regex: each extra "a" doubles its time
        t = time.monotonic()
        re.match(r"(a+)+$", "a" * n + "b")
        took = time.monotonic() - t
        n += 1
    while took < 3 * lease:
        n += 1
        took *= 2
    queue = wh.Queue.from_url(
        redis_server.url, namespace=f"gil{time.monotonic_ns()}", lease=lease, reaper_interval=0.1
    )
    worker = wh.Worker(concurrency=1, queue=queue)
    runs: list[float] = []

    @worker.handler("stuck")
    def stuck(job):
        t = time.monotonic()
        re.match(r"(a+)+$", "a" * n + "b")  # one C call, the GIL held throughout
        runs.append(time.monotonic() - t)

    queue.enqueue("stuck")
    assert worker.drain(60)
    worker.stop(5)
    assert len(runs) == 1 and runs[0] >= 2 * lease, runs
    stats = queue.client.stats()
    assert stats["reaped"] == 0 and stats["stale_acks"] == 0, stats
    assert stats["processed"] == 1


def test_a_worker_that_cannot_renew_cancels_its_job_before_the_lease_ends(
    own_redis: RedisServer,
) -> None:
    # RELIABILITY.md row 11: Redis paused for longer than the lease. The worker cannot renew, so
    # it cancels the run itself before the lease runs out; afterwards the job is recovered.
    server = own_redis
    lease = 2.0  # cancelled at about 2/3 of it: a third of a lease of slack for a busy machine
    queue = wh.Queue.from_url(server.url, namespace="pause", lease=lease, reaper_interval=0.2)
    worker = wh.Worker(concurrency=1, queue=queue)
    started = threading.Event()
    seen: list[tuple[str, float]] = []

    @worker.handler("long", max_fails=5)
    def long(job):
        if seen:  # the re-run after the pause
            seen.append(("rerun", time.monotonic()))
            return
        started.set()
        job.ctx.wait_cancelled(10)
        seen.append(("cancelled", time.monotonic()))

    queue.enqueue("long")
    worker.start()
    assert started.wait(10)
    time.sleep(0.05)
    paused_at = time.monotonic()
    server.command("CLIENT", "PAUSE", int(2.5 * lease * 1000), "ALL")
    end = time.monotonic() + 20
    while time.monotonic() < end and not any(k == "rerun" for k, _ in seen):
        time.sleep(0.05)
    worker.stop(5)
    kinds = [k for k, _ in seen]
    assert kinds[:1] == ["cancelled"] and "rerun" in kinds, seen
    cancelled_after = seen[0][1] - paused_at
    # The last renewal was at most L/3 before the pause: cancelled before the lease ended.
    assert cancelled_after < lease, cancelled_after


def test_a_job_that_kills_its_worker_every_time_ends_dead(redis_server, tmp_path: Path):
    # RELIABILITY.md row 15: a poison job (os._exit in the handler). Each lost run counts as a
    # failure, so after max_fails the reaper sends it to the dead set instead of looping.
    ns = f"poison{time.monotonic_ns()}"
    script = tmp_path / "poison.py"
    script.write_text(
        "import os, sys, time, workhorse as wh\n"
        f"q = wh.Queue.from_url({redis_server.url!r}, namespace={ns!r}, lease=0.5,"
        " reaper_interval=0.1)\n"
        "w = wh.Worker(concurrency=1, queue=q)\n"
        "w.register('ok', lambda job: None)\n"
        "@w.handler('poison', max_fails=2)\n"
        "def poison(job):\n"
        "    os._exit(137)\n"
        "w.start()\n"
        "time.sleep(3)\n"
        "w.stop(1)\n"
    )
    queue = wh.Queue.from_url(redis_server.url, namespace=ns)
    job = queue.enqueue("poison")
    queue.enqueue("ok")
    exits = []
    end = time.monotonic() + 40
    while time.monotonic() < end and not queue.client.dead_jobs().total:
        proc = subprocess.run([sys.executable, str(script)], timeout=30, capture_output=True)
        exits.append(proc.returncode)
    (dead,) = queue.client.dead_jobs().jobs
    assert dead.id == job.id and dead.fails == 2, dead
    assert "worker" in (dead.reason or ""), dead.reason
    assert 137 in exits
    assert queue.client.stats()["processed"] >= 1  # the other job ran


def test_a_redis_that_lost_its_data_is_detected_counted_and_workers_go_on(
    own_redis: RedisServer, capfd: pytest.CaptureFixture[str]
) -> None:
    # RELIABILITY.md row 9: restarted without persistence. The epoch key is gone: the loss is
    # logged and counted (at the next heartbeat, within 5 s), and the workers keep working.
    server = own_redis
    queue = wh.Queue.from_url(server.url, namespace="epoch", lease=2.0, reaper_interval=0.2)
    worker = wh.Worker(concurrency=2, queue=queue)
    done: list[int] = []
    worker.register("job", lambda j: done.append(j.args["i"]))
    queue.enqueue("job", {"i": 1})
    assert worker.drain(10) and done == [1]
    server.kill()
    server.start()
    end = time.monotonic() + 15
    while time.monotonic() < end:
        try:
            if queue.client.stats()["data_losses"] == 1:
                break
        except wh.QueueError:
            pass
        time.sleep(0.1)
    assert queue.client.stats()["data_losses"] == 1
    queue.enqueue("job", {"i": 2})
    assert worker.drain(10) and done == [1, 2]
    worker.stop(5)
    assert "Redis lost its data" in capfd.readouterr().err
