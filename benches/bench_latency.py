"""Latency at low load: call -> handler start, workhorse vs ThreadPoolExecutor vs asyncio.

Run: .venv/bin/python benches/bench_latency.py [--iterations N] [--warmup W]

One job at a time: the caller records time.perf_counter() just before the call, the handler
records it on its first line, and the caller waits for completion before the next iteration.
- workhorse: `execution = worker.perform(job)` (async perform, plain `def` handler), then
  `execution.wait()`; Worker(concurrency=10).
- ThreadPoolExecutor(10): `ex.submit(fn)` -> fn start, then `future.result()`.
- asyncio: from a running loop, `loop.create_task(coro())` -> coroutine start, then `await task`.
- extra row: workhorse `Executor(10).submit(fn)` (the ThreadPoolExecutor swap-in).
Each contender runs in a fresh spawned process after W warm-up iterations.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import math
import multiprocessing
import time
from collections.abc import Callable
from typing import Any

Stats = dict[str, float]


def stats_us(values: list[float]) -> Stats:
    s = sorted(values)
    n = len(s)

    def rank(p: float) -> float:
        return s[min(n - 1, max(0, math.ceil(p * n) - 1))] * 1e6

    return {"p50": rank(0.5), "p99": rank(0.99), "mean": sum(s) / n * 1e6, "max": s[-1] * 1e6}


def run_workhorse(iterations: int, warmup: int) -> Stats:
    import workhorse as wh

    started = [0.0]
    clock = time.perf_counter

    def handler(job: wh.Job) -> None:
        started[0] = clock()

    worker = wh.Worker(concurrency=10)
    worker.register("h", handler)
    lat: list[float] = []
    with worker:
        for i in range(warmup + iterations):
            job = wh.Job("h")
            t = clock()
            execution = worker.perform(job)
            execution.wait()
            if i >= warmup:
                lat.append(started[0] - t)
    return stats_us(lat)


def run_submit(iterations: int, warmup: int, make: Callable[[], Any]) -> Stats:
    started = [0.0]
    clock = time.perf_counter

    def fn() -> None:
        started[0] = clock()

    lat: list[float] = []
    with make() as ex:
        for i in range(warmup + iterations):
            t = clock()
            fut = ex.submit(fn)
            fut.result()
            if i >= warmup:
                lat.append(started[0] - t)
    return stats_us(lat)


def make_tpe() -> concurrent.futures.Executor:
    return concurrent.futures.ThreadPoolExecutor(10)


def make_wh_executor() -> concurrent.futures.Executor:
    import workhorse as wh

    return wh.Executor(10)


def run_tpe(iterations: int, warmup: int) -> Stats:
    return run_submit(iterations, warmup, make_tpe)


def run_wh_executor(iterations: int, warmup: int) -> Stats:
    return run_submit(iterations, warmup, make_wh_executor)


def run_asyncio(iterations: int, warmup: int) -> Stats:
    started = [0.0]
    clock = time.perf_counter

    async def coro() -> None:
        started[0] = clock()

    async def main() -> Stats:
        loop = asyncio.get_running_loop()
        lat: list[float] = []
        for i in range(warmup + iterations):
            t = clock()
            task = loop.create_task(coro())
            await task
            if i >= warmup:
                lat.append(started[0] - t)
        return stats_us(lat)

    return asyncio.run(main())


def in_subprocess(fn: Callable[..., Stats], *args: Any) -> Stats:
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    n, w = args.iterations, args.warmup

    rows: dict[str, Stats] = {}
    rows["workhorse perform -> handler"] = in_subprocess(run_workhorse, n, w)
    rows["ThreadPoolExecutor(10).submit -> fn"] = in_subprocess(run_tpe, n, w)
    rows["asyncio create_task -> coroutine"] = in_subprocess(run_asyncio, n, w)
    rows["workhorse Executor(10).submit -> fn"] = in_subprocess(run_wh_executor, n, w)

    print(f"latency: call -> handler start, one at a time, {n:,} iterations after {w} warm-up")
    print(f"  {'contender':<38} {'p50 us':>9} {'p99 us':>9} {'mean us':>9} {'max us':>9}")
    for name, s in rows.items():
        print(f"  {name:<38} {s['p50']:>9.1f} {s['p99']:>9.1f} {s['mean']:>9.1f} {s['max']:>9.1f}")
    wh_, tpe = rows["workhorse perform -> handler"], rows["ThreadPoolExecutor(10).submit -> fn"]
    for p in ("p50", "p99"):
        r = wh_[p] / tpe[p]
        print(
            f"  ratio workhorse / ThreadPoolExecutor {p}: {r:.2f}x (goal <= 2)  "
            f"{'ok' if r <= 2 else 'MISSED'}"
        )
    ex = rows["workhorse Executor(10).submit -> fn"]
    print(
        f"  ratio workhorse Executor / ThreadPoolExecutor p50 {ex['p50'] / tpe['p50']:.2f}x, "
        f"p99 {ex['p99'] / tpe['p99']:.2f}x (no goal)"
    )


if __name__ == "__main__":
    main()
