"""Queued jobs across real processes on a real redis-server: a worker killed with SIGKILL in the
middle of a job, a frozen worker whose lease another worker took over, and the command line.
A ledger file written by the handlers (outside Redis) is the ground truth."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import workhorse as wh

pytestmark = pytest.mark.timeout(90)

LEASE, REAPER = 1.0, 0.2

APP = textwrap.dedent(
    """
    import json, os, sys, time
    import workhorse as wh

    LEDGER = os.environ["LEDGER"]

    def note(job, phase):
        with open(LEDGER, "a") as f:
            f.write(json.dumps({"id": job.id, "fails": job.fails, "pid": os.getpid(),
                                "phase": phase, "t": time.time()}) + "\\n")

    def make(concurrency=4, queue=None):
        worker = wh.Worker(concurrency=concurrency, queue=queue, grace=0.5)

        @worker.handler("slow", max_fails=5)
        def slow(job):
            note(job, "start")
            deadline = time.monotonic() + job.args.get("seconds", 0)
            while time.monotonic() < deadline and not job.ctx.cancelled:
                time.sleep(0.01)
            note(job, "end")

        return worker
    """
)


@pytest.fixture
def app(tmp_path: Path, redis_server) -> dict[str, str]:
    (tmp_path / "app.py").write_text(APP)
    ns = f"p{os.getpid()}{time.monotonic_ns()}"
    return {
        "cwd": str(tmp_path),
        "ledger": str(tmp_path / "ledger.jsonl"),
        "url": redis_server.url,
        "ns": ns,
    }


def spawn(app: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "LEDGER": app["ledger"], "PYTHONPATH": app["cwd"]}
    return subprocess.Popen(
        [sys.executable, "-m", "workhorse", "--url", app["url"], "--namespace", app["ns"],
         "worker", "app:make", "--log-level", "WARNING", *extra],
        cwd=app["cwd"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def ledger(app: dict[str, str]) -> list[dict[str, object]]:
    try:
        with open(app["ledger"]) as f:
            return [json.loads(line) for line in f]
    except FileNotFoundError:
        return []


def wait_for(pred, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


def queue_of(app: dict[str, str]) -> wh.Queue:
    return wh.Queue.from_url(app["url"], namespace=app["ns"], lease=LEASE, reaper_interval=REAPER)


def test_a_killed_workers_job_is_reaped_and_rerun_within_the_bound(app, tmp_path):
    queue = queue_of(app)
    job = queue.enqueue("slow", {"seconds": 30})
    # A worker process that holds the job under a short lease, then dies with SIGKILL.
    script = tmp_path / "holder.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import app, workhorse as wh
            q = wh.Queue.from_url({app['url']!r}, namespace={app['ns']!r}, lease={LEASE},
                                  reaper_interval={REAPER})
            w = app.make(queue=q)
            w.start()
            import time
            time.sleep(60)
            """
        )
    )
    env = {**os.environ, "LEDGER": app["ledger"], "PYTHONPATH": app["cwd"]}
    holder = subprocess.Popen([sys.executable, str(script)], cwd=app["cwd"], env=env)
    try:
        assert wait_for(lambda: any(e["phase"] == "start" for e in ledger(app)), 20)
        killed_at = time.time()
        holder.kill()
        holder.wait(10)
    finally:
        if holder.poll() is None:
            holder.kill()
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
    assert at - killed_at <= LEASE + REAPER + 2.0
    assert queue.client.stats()["reaped"] >= 1
    assert [q.ready + q.running + q.retry for q in queue.client.queues()] == [0]


def test_a_frozen_workers_ack_is_refused_after_another_took_the_job(app, tmp_path):
    queue = queue_of(app)
    job = queue.enqueue("slow", {"seconds": 2 * LEASE + 1})
    script = tmp_path / "frozen.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import app, workhorse as wh, time
            q = wh.Queue.from_url({app['url']!r}, namespace={app['ns']!r}, lease={LEASE},
                                  reaper_interval=3600)
            w = app.make(queue=q)
            w.start()
            time.sleep(60)
            """
        )
    )
    env = {**os.environ, "LEDGER": app["ledger"], "PYTHONPATH": app["cwd"]}
    frozen = subprocess.Popen([sys.executable, str(script)], cwd=app["cwd"], env=env)
    try:
        assert wait_for(lambda: any(e["phase"] == "start" for e in ledger(app)), 20)
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
        os.kill(frozen.pid, signal.SIGCONT)
        frozen.kill()
        frozen.wait(10)
    assert done == [(job.id, 1)]
    stats = queue.client.stats()
    assert stats["stale_acks"] >= 1
    # Exactly one final state: completed once, nothing left anywhere.
    assert [(q.ready, q.running, q.retry, q.dead) for q in queue.client.queues()] == [(0, 0, 0, 0)]


def test_sigterm_lets_a_short_job_finish_and_the_command_exits_cleanly(app):
    queue = queue_of(app)
    queue.enqueue("slow", {"seconds": 0.3})
    worker = spawn(app)
    try:
        assert wait_for(lambda: any(e["phase"] == "start" for e in ledger(app)), 20)
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=20)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err
    assert [e["phase"] for e in ledger(app)] == ["start", "end"]
    assert queue.client.stats()["processed"] == 1


def test_enqueue_info_pause_and_burst_from_the_command_line(app):
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "workhorse", "--url", app["url"], "--namespace", app["ns"]]
            + list(args),
            capture_output=True,
            text=True,
            timeout=30,
            cwd=app["cwd"],
            env={**os.environ, "LEDGER": app["ledger"], "PYTHONPATH": app["cwd"]},
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
    assert [e["phase"] for e in ledger(app)] == ["start", "end"]
    assert cli("dead", "retry", "--all").stdout.strip() == "retried 0 dead job(s)"
