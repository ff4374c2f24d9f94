"""Overhead per execution: what workhorse adds around a handler call, sync and async.

Run: .venv/bin/python benches/bench_overhead.py [--jobs N] [--repeat R]

For an empty handler it times, per execution:
- a bare Python loop calling the handler (sync) or awaiting it (async): the floor;
- `worker.perform(job, sync=True)` in the caller's thread (no hand-off to another thread);
- a burst of `worker.perform(job)` at concurrency 10 (as in bench_burst.py), drained by the
  executor threads (sync) or the worker's asyncio lane (async): time per execution in throughput;
- the same with the prometheus and request_id adapters;
- each counting adapter (prometheus, request_id, health) called directly around the status
  rules, beyond the status rules alone.
The overhead is the per-execution time minus the bare loop's (issue 7's goal: <= 1 us sync).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

import workhorse as wh


def noop(job: wh.Job) -> None:
    return None


async def anoop(job: wh.Job) -> None:
    return None


def per_call(fn: Callable[[], None], n: int, repeat: int) -> float:
    """Best seconds per execution over `repeat` runs of `fn`, which does n executions."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def bare_sync(n: int) -> Callable[[], None]:
    job = wh.Job("noop")

    def run() -> None:
        for _ in range(n):
            noop(job)

    return run


def bare_async(n: int) -> Callable[[], None]:
    job = wh.Job("noop")

    async def loop() -> None:
        for _ in range(n):
            await anoop(job)

    return lambda: asyncio.run(loop())


def inline(worker: wh.Worker, n: int) -> Callable[[], None]:
    def run() -> None:
        job = wh.Job("noop")
        for _ in range(n):
            worker.perform(job, sync=True)

    return run


def burst(worker: wh.Worker, name: str, n: int) -> Callable[[], None]:
    def run() -> None:
        executions = [worker.perform(wh.Job(name)) for _ in range(n)]
        executions[-1].wait()
        while worker.running:
            time.sleep(0.0005)

    return run


def adapter_costs(n: int, repeat: int) -> list[tuple[str, float]]:
    """Each counting adapter around the status rules, called directly on a fresh Job: seconds
    per execution beyond the status rules alone (issue 7: well under 1 us an adapter)."""
    from prometheus_client import CollectorRegistry

    from workhorse.adapters import health, prometheus, request_id
    from workhorse.middleware import apply_status_rules

    ruled = apply_status_rules(noop)

    def cost(adapters: tuple[wh.Adapter, ...]) -> float:
        handler = wh.adapt(ruled, *adapters) if adapters else ruled

        def run() -> None:
            for _ in range(n):
                handler(wh.Job("noop"))

        return per_call(run, n, repeat)

    base = cost(())
    return [
        ("prometheus", cost((prometheus(registry=CollectorRegistry()),)) - base),
        ("request_id", cost((request_id(),)) - base),
        ("health", cost((health(),)) - base),
        (
            "prometheus + request_id",
            cost((prometheus(registry=CollectorRegistry()), request_id())) - base,
        ),
    ]


def make_worker(adapters: tuple[wh.Adapter, ...] = ()) -> wh.Worker:
    worker = wh.Worker(concurrency=10, adapters=adapters)
    worker.register("noop", noop)
    worker.register("anoop", anoop)
    worker.start()
    worker.perform(wh.Job("noop")).wait()
    worker.perform(wh.Job("anoop")).wait()
    return worker


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n, r = args.jobs, args.repeat

    floor_sync = per_call(bare_sync(n), n, r)
    floor_async = per_call(bare_async(n), n, r)
    rows: list[tuple[str, float, float]] = []
    plain = make_worker()
    rows.append(("perform(sync=True), sync handler", per_call(inline(plain, n), n, r), floor_sync))
    rows.append(
        ("perform burst, sync handler", per_call(burst(plain, "noop", n), n, r), floor_sync)
    )
    rows.append(
        ("perform burst, async handler", per_call(burst(plain, "anoop", n), n, r), floor_async)
    )
    plain.stop(5)
    try:
        from prometheus_client import CollectorRegistry

        from workhorse.adapters import prometheus, request_id

        adapted = make_worker((request_id(), prometheus(registry=CollectorRegistry())))
        rows.append(
            (
                "perform burst, sync, prometheus + request_id",
                per_call(burst(adapted, "noop", n), n, r),
                floor_sync,
            )
        )
        rows.append(
            (
                "perform burst, async, prometheus + request_id",
                per_call(burst(adapted, "anoop", n), n, r),
                floor_async,
            )
        )
        adapted.stop(5)
        costs = adapter_costs(n, max(r, 5))
    except ImportError as exc:
        costs = []
        print(f"(adapter rows skipped: {exc})")

    print(f"overhead per execution, empty handler, {n:,} executions, best of {r}")
    print(f"  bare loop calling the sync handler        {floor_sync * 1e6:8.3f} us")
    print(f"  bare loop awaiting the async handler      {floor_async * 1e6:8.3f} us")
    for name, seconds, floor in rows:
        print(f"  {name:<46} {seconds * 1e6:8.3f} us  overhead {(seconds - floor) * 1e6:7.3f} us")
    if costs:
        print("  each adapter around the status rules, called directly on a fresh Job:")
    for name, seconds in costs:
        print(f"    {name:<44} {seconds * 1e6:8.3f} us")
    sync_burst = rows[1][1] - floor_sync
    verdict = "ok" if sync_burst <= 1e-6 else "MISSED"
    print(f"  goal: sync overhead <= 1 us: {sync_burst * 1e6:.3f} us  {verdict}")


if __name__ == "__main__":
    main()
