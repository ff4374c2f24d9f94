"""`make demo` (python -m workhorse.demo): interval jobs, a channel receiver and an on-ramping
ConcurrentJob on the in-memory default, with a live summary in the terminal; then a durable
queue (memory:// by default, Redis when WORKHORSE_URL=redis://... is set): enqueues, retries, a
dead job and a cron slot."""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import threading
import time

import workhorse as wh


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workhorse.demo")
    parser.add_argument("--seconds", type=float, default=6.0, help="how long to run")
    args = parser.parse_args(argv)

    worker = wh.Worker(concurrency=20, name="demo")
    ticks = {"fast": 0, "slow": 0}
    received: list[int] = []

    @worker.handler("tick")
    def tick(job: wh.Job) -> None:
        ticks[job.arg_str("name")] += 1

    @worker.handler("order")
    def order(job: wh.Job) -> None:
        received.append(job.args["received_data"])
        if job.args["received_data"] % 7 == 0:
            job.ctx.set_status(wh.Status.BAD_REQUEST)  # a rejected order, not a crash

    @worker.handler("flaky")
    async def flaky(job: wh.Job) -> None:
        if random.random() < 0.1:
            raise RuntimeError("flaky failed (on purpose)")

    crawl = wh.ConcurrentJob(
        wh.Job("crawl"),
        perform_with=wh.PerformWith.EVERY_SYNC,
        every=0.05,
        max_workers=5,
        start_interval=0.5,
        name="crawl",
    )
    crawled: dict[int, int] = {}

    def crawl_page(job: wh.Job) -> None:
        n = job.ctx.get("worker_number")
        crawled[n] = crawled.get(n, 0) + 1
        time.sleep(0.01)

    crawl.register("crawl", crawl_page)

    orders = wh.Channel(100)

    def producer() -> None:
        for i in range(1, 10_000):
            try:
                orders.send(i, timeout=1.0)
            except wh.ChannelClosed:
                return
            time.sleep(0.005)

    logging.getLogger("workhorse").setLevel(logging.CRITICAL)  # flaky's errors are expected
    with worker, crawl:
        worker.perform_every(wh.Job("tick", {"name": "fast"}), 0.01)
        worker.perform_every(wh.Job("tick", {"name": "slow"}), 0.25)
        worker.perform_every(wh.Job("flaky"), 0.02)
        worker.perform_receive(wh.Job("order"), orders)
        threading.Thread(target=producer, daemon=True).start()
        start = time.monotonic()
        while time.monotonic() - start < args.seconds:
            time.sleep(0.5)
            elapsed = time.monotonic() - start
            stats = worker.stats()
            by_status = " ".join(f"{k}:{v}" for k, v in sorted(stats["by_status"].items()))
            lateness = worker.figures()
            ticks_total = max(lateness["interval_ticks_total"], 1.0)
            mean_late_ms = lateness["interval_lateness_seconds_sum"] / ticks_total * 1e3
            sys.stdout.write(
                f"\r{elapsed:4.1f}s ticks fast={ticks['fast']} slow={ticks['slow']} "
                f"orders={len(received)} crawl workers={crawl.running_workers}/5 "
                f"statuses[{by_status}] mean tick lateness={mean_late_ms:.3f}ms   "
            )
            sys.stdout.flush()
        orders.close()
    print()
    print(f"crawl runs per worker number: {dict(sorted(crawled.items()))}")
    queue_demo(os.environ.get("WORKHORSE_URL", "memory://"), min(args.seconds, 4.0))
    print("demo done: every status above came through the Rust core's dispatcher")


def queue_demo(url: str, seconds: float) -> None:
    """Enqueue, retry, die and tick on a durable queue, printing its client's view."""
    queue = wh.Queue.from_url(url, namespace=f"demo-{os.getpid()}")
    worker = wh.Worker(concurrency=10, queue=queue, name="queue-demo", grace=1.0)
    sent: list[str] = []

    @worker.handler("email", backoff=lambda job: 0.2)
    def email(job: wh.Job) -> wh.Result | None:
        if job.args.get("flaky") and job.fails < 2:  # type: ignore[attr-defined]
            raise RuntimeError("smtp timeout (on purpose)")
        sent.append(job.args["to"])
        return None

    @worker.handler("import", max_fails=1)
    def import_rows(job: wh.Job) -> wh.Result:
        return wh.Result.dead("the file is not CSV (on purpose)")

    @worker.handler("report")
    def report(job: wh.Job) -> None:
        sent.append("report")

    print(f"\nqueue demo on {url}:")
    worker.periodically_enqueue("* * * * * *", "report")  # one per second, once per slot
    queue.enqueue_many([("email", {"to": f"user{i}@example.com"}) for i in range(20)])
    queue.enqueue("email", {"to": "flaky@example.com", "flaky": True})
    queue.enqueue_in("email", 0.5, {"to": "later@example.com"})
    queue.enqueue("import", {"file": "rows.xlsx"})
    with worker:
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            time.sleep(0.5)
            rows = " ".join(
                f"{q.name}[ready={q.ready} sched={q.scheduled} retry={q.retry} dead={q.dead}]"
                for q in queue.client.queues()
            )
            sys.stdout.write(f"\r  sent={len(sent)} {rows}   ")
            sys.stdout.flush()
    print()
    for job in queue.client.dead_jobs().jobs:
        print(f"  dead: {job.name} {job.args} reason={job.reason!r}")
    print(f"  counters: {queue.client.stats()}")


if __name__ == "__main__":
    main()
