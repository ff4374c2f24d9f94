"""Burst: 100,000 no-op sync jobs at concurrency 10: workhorse, asyncio, uvloop, ThreadPoolExecutor.

Run: .venv/bin/python benches/bench_burst.py [--jobs N]   (uvloop: pip install uvloop)
Prints jobs/s for each and the ratios the goals are set on (>= 3x the faster of asyncio and
uvloop; Executor.submit >= 3x ThreadPoolExecutor.submit), plus the row with the prometheus and
request_id adapters on (>= 2x the faster loop).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import time
from collections.abc import Callable

import workhorse as wh

CONCURRENCY = 10


def noop(*_: object) -> None:
    return None


def bench_workhorse(n: int, adapters: tuple[wh.Adapter, ...] = ()) -> float:
    worker = wh.Worker(concurrency=CONCURRENCY, adapters=adapters)
    worker.register("noop", noop)
    with worker:
        worker.perform(wh.Job("noop")).wait()  # warm up threads
        t0 = time.perf_counter()
        executions = [worker.perform(wh.Job("noop")) for _ in range(n)]
        for execution in executions:
            execution.wait()
        elapsed = time.perf_counter() - t0
    assert all(e.status == wh.Status.SUCCESS for e in executions)
    return n / elapsed


def bench_asyncio(
    n: int, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
) -> float:
    async def main() -> float:
        sem = asyncio.Semaphore(CONCURRENCY)

        async def run() -> None:
            async with sem:
                noop()

        t0 = time.perf_counter()
        tasks = [asyncio.ensure_future(run()) for _ in range(n)]
        await asyncio.gather(*tasks)
        return n / (time.perf_counter() - t0)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())


def bench_submit(n: int, make: Callable[[], concurrent.futures.Executor]) -> float:
    with make() as ex:
        ex.submit(noop).result()
        t0 = time.perf_counter()
        futures = [ex.submit(noop) for _ in range(n)]
        for f in futures:
            f.result()
        return n / (time.perf_counter() - t0)


def best(fn: Callable[[], float], repeat: int) -> float:
    return max(fn() for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n, r = args.jobs, args.repeat

    rows: dict[str, float] = {}
    rows["workhorse perform"] = best(lambda: bench_workhorse(n), r)
    rows["asyncio + Semaphore(10)"] = best(lambda: bench_asyncio(n), r)
    try:
        import uvloop

        rows["uvloop + Semaphore(10)"] = best(lambda: bench_asyncio(n, uvloop.new_event_loop), r)
    except ImportError:
        print("(uvloop row skipped: pip install uvloop)")
    rows["ThreadPoolExecutor(10) submit"] = best(
        lambda: bench_submit(n, lambda: concurrent.futures.ThreadPoolExecutor(CONCURRENCY)), r
    )
    rows["workhorse Executor(10) submit"] = best(
        lambda: bench_submit(n, lambda: wh.Executor(CONCURRENCY)), r
    )
    try:
        from prometheus_client import CollectorRegistry

        from workhorse.adapters import prometheus, request_id

        registry = CollectorRegistry()
        adapters = (request_id(), prometheus(registry=registry))
        rows["workhorse perform + prometheus + request_id"] = best(
            lambda: bench_workhorse(n, adapters), r
        )
    except ImportError as exc:
        print(f"(adapters row skipped: {exc})")

    print(f"burst: {n:,} no-op jobs, concurrency {CONCURRENCY}, best of {r}")
    for name, rate in rows.items():
        print(f"  {name:<45} {rate:>12,.0f} jobs/s")
    # The goal is against the faster of the two loops.
    loops = [k for k in ("asyncio + Semaphore(10)", "uvloop + Semaphore(10)") if k in rows]
    fastest = max(loops, key=rows.__getitem__)
    base = rows[fastest]
    print(f"  (ratios below are against the faster loop: {fastest})")
    tpe = rows["ThreadPoolExecutor(10) submit"]
    perform = rows["workhorse perform"]
    submit = rows["workhorse Executor(10) submit"]
    print(f"  ratio workhorse perform / faster loop        {perform / base:6.2f}x (goal >= 3)")
    print(f"  ratio workhorse perform / ThreadPoolExecutor {perform / tpe:6.2f}x")
    print(f"  ratio Executor.submit / TPE.submit           {submit / tpe:6.2f}x (goal >= 3)")
    key = "workhorse perform + prometheus + request_id"
    if key in rows:
        print(f"  ratio with prometheus+request_id / loop    {rows[key] / base:6.2f}x (goal >= 2)")


if __name__ == "__main__":
    main()
