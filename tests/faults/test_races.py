"""Races between processes, on a real redis-server with the ledger file as the truth
(RELIABILITY.md rows 17 and 18): reapers of five workers racing for a dead worker's jobs, and
fifty enqueue_unique calls from five processes racing for one key."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter

import pytest
from harness import App, reap, wait_for

pytestmark = pytest.mark.timeout(90)


def test_racing_reapers_requeue_each_orphan_exactly_once(app: App) -> None:
    # Row 17: five worker processes, each reaping every 100 ms; one is killed (kill -9) while it
    # holds four jobs. The four reapers left all see the same expired leases: each orphan must be
    # requeued once (two starts in all, `reaped` = 4), no job lost, none run three times.
    # L = 2 s: a loaded machine must not make a live worker miss its renewals.
    lease, reaper, orphans = 2.0, 0.1, 4
    queue = app.queue(lease=lease, reaper=reaper)
    victim = app.holder("victim", lease=lease, reaper=reaper, concurrency=orphans)
    others: list[subprocess.Popen[str]] = []
    try:
        assert wait_for(lambda: len(queue.client.worker_pools()) == 1, 30)
        held = [queue.enqueue("slow", {"seconds": 60, "retry_seconds": 0}).id
                for _ in range(orphans)]
        assert wait_for(lambda: len(app.phases("start")) == orphans, 20), app.ledger()
        others = [
            app.holder(f"w{i}", lease=lease, reaper=reaper, concurrency=4) for i in range(4)
        ]
        assert wait_for(lambda: len(queue.client.worker_pools()) == 5, 30)
        # Work for the live ones while the orphans' leases run out.
        short = [j.id for j in queue.enqueue_many([("slow", {"seconds": 0.05})] * 40)]
        victim.kill()
        victim.wait(10)
        every = set(held) | set(short)

        def all_done() -> bool:  # ended, and acked (a handler's end is noted before its ack)
            ended = {e["id"] for e in app.phases("end")} >= every
            return ended and queue.client.stats()["processed"] >= len(every)

        assert wait_for(all_done, lease + 20), Counter(e["id"] for e in app.phases("end"))
    finally:
        for proc in [victim, *others]:
            reap(proc)
    starts = Counter(e["id"] for e in app.phases("start"))
    assert set(starts) == every  # none lost, nothing else ran
    assert {i for i, n in starts.items() if n == 2} == set(held), starts
    assert max(starts.values()) == 2
    assert {i for i, n in starts.items() if n == 1} == set(short)
    reruns = [e for e in app.phases("start") if e["id"] in held and e["pid"] != victim.pid]
    assert sorted(e["fails"] for e in reruns) == [1] * orphans  # each lost run counted once
    assert {e["pid"] for e in reruns} <= {p.pid for p in others}
    stats = queue.client.stats()
    assert stats["reaped"] == orphans, stats
    assert stats["processed"] == len(every), stats
    assert [(q.ready, q.running, q.retry, q.dead) for q in queue.client.queues()] == [
        (0, 0, 0, 0)
    ]


# Each racer connects, parks ten threads, says it is ready, then fires them all when the test
# opens the round's gate; it writes what each call returned (an id, or None).
RACER = """
import json, os, sys, threading, time, workhorse as wh

url, ns, me, rounds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
q = wh.Queue.from_url(url, namespace=ns)
for name in rounds:
    results = [None] * 10
    go = threading.Event()

    def race(i):
        go.wait()
        job = q.enqueue_unique("slow", {"id": 7, "seconds": 60})
        results[i] = job.id if job is not None else None

    threads = [threading.Thread(target=race, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    open(f"{me}.{name}.ready", "w").close()
    while not os.path.exists(f"{name}.go"):
        time.sleep(0.0005)
    go.set()
    for t in threads:
        t.join()
    with open(f"{me}.{name}.tmp", "w") as f:
        json.dump(results, f)
    os.rename(f"{me}.{name}.tmp", f"{me}.{name}.json")
"""


def test_fifty_racing_unique_enqueues_from_five_processes_store_one_job(app: App) -> None:
    # Row 18: fifty enqueue_unique calls with one key, ten threads in each of five processes,
    # released together. Exactly one job; once it is claimed (running) the key is free, and a
    # second round of fifty again stores exactly one, which then holds the key while it waits
    # (unique while waiting, DESIGN.md section 3).
    queue = app.queue()
    script = app.cwd / "racer.py"
    script.write_text(RACER)
    racers = [
        subprocess.Popen(
            [sys.executable, str(script), app.url, app.ns, f"r{i}", "one", "two"],
            cwd=app.cwd,
            env=app.env,
            text=True,
        )
        for i in range(5)
    ]
    holder = None

    def race(name: str) -> list[str | None]:
        assert wait_for(
            lambda: all((app.cwd / f"r{i}.{name}.ready").exists() for i in range(5)), 30
        ), f"the racers never got ready for round {name}"
        (app.cwd / f"{name}.go").touch()
        assert wait_for(
            lambda: all((app.cwd / f"r{i}.{name}.json").exists() for i in range(5)), 30
        ), f"round {name} never ended"
        return [
            r for i in range(5) for r in json.loads((app.cwd / f"r{i}.{name}.json").read_text())
        ]

    try:
        first = race("one")
        assert len(first) == 50
        (winner,) = [r for r in first if r is not None]
        (info,) = queue.client.queues()
        assert (info.ready, info.running) == (1, 0), info
        # A worker claims it (and runs it for a minute): the key is released at the claim.
        holder = app.holder("holder", concurrency=1)
        assert wait_for(lambda: app.phases("start"), 30)
        second = race("two")
        (again,) = [r for r in second if r is not None]
        assert again != winner
        (info,) = queue.client.queues()
        assert (info.ready, info.running) == (1, 1), info
        assert [b.job_id for b in queue.client.busy_workers()] == [winner]
        # The new one waits, so it holds the key.
        assert queue.enqueue_unique("slow", {"id": 7, "seconds": 60}) is None
        for proc in racers:
            assert proc.wait(30) == 0
    finally:
        for proc in racers:
            reap(proc)
        if holder is not None:
            holder.send_signal(signal.SIGKILL)
            reap(holder)
    assert [(e["id"], e["fails"]) for e in app.phases("start")] == [(winner, 0)]
