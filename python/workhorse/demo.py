"""`make demo` (python -m workhorse.demo): interval jobs, a channel receiver and an on-ramping
ConcurrentJob on the in-memory default, with a live summary in the terminal."""

from __future__ import annotations

import argparse
import logging
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
    print("demo done: every status above came through the Rust core's dispatcher")


if __name__ == "__main__":
    main()
