"""Executor vs ThreadPoolExecutor: 100,000 no-op calls, however the caller collects the results.

Run: .venv/bin/python benches/bench_executor.py [--calls N] [--repeat R]
Four ways of collecting: `f.result()` on each future, `ex.map`, `concurrent.futures.wait(fs)` and
`concurrent.futures.as_completed(fs)`. The last two install a waiter on every future, which is
where a Future that builds its lock lazily loses its advantage. Prints calls/s and the ratio to
ThreadPoolExecutor for each (the thin-boundary issue's goal: >= 3x in all four).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import time
from collections.abc import Callable

import workhorse as wh

WORKERS = 10


def noop() -> None:
    return None


def identity(x: int) -> int:
    return x


def collect_result(ex: concurrent.futures.Executor, n: int) -> None:
    for f in [ex.submit(noop) for _ in range(n)]:
        f.result()


def collect_map(ex: concurrent.futures.Executor, n: int) -> None:
    for _ in ex.map(identity, range(n)):
        pass


def collect_wait(ex: concurrent.futures.Executor, n: int) -> None:
    done, pending = concurrent.futures.wait([ex.submit(noop) for _ in range(n)])
    assert len(done) == n and not pending


def collect_as_completed(ex: concurrent.futures.Executor, n: int) -> None:
    count = 0
    for _ in concurrent.futures.as_completed([ex.submit(noop) for _ in range(n)]):
        count += 1
    assert count == n


WAYS: dict[str, Callable[[concurrent.futures.Executor, int], None]] = {
    "result()": collect_result,
    "map": collect_map,
    "wait": collect_wait,
    "as_completed": collect_as_completed,
}


def rate(make: Callable[[], concurrent.futures.Executor], way: str, n: int) -> float:
    with make() as ex:
        ex.submit(noop).result()  # threads started
        t0 = time.perf_counter()
        WAYS[way](ex, n)
        return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n, r = args.calls, args.repeat
    makers: dict[str, Callable[[], concurrent.futures.Executor]] = {
        "ThreadPoolExecutor": lambda: concurrent.futures.ThreadPoolExecutor(WORKERS),
        "workhorse Executor": lambda: wh.Executor(WORKERS),
    }
    print(f"executor: {n:,} no-op calls, {WORKERS} workers, best of {r}, calls/s")
    header = f"{'collected by':<14} {'ThreadPoolExecutor':>20} {'workhorse Executor':>20}"
    print(f"  {header} {'ratio':>7}")
    for way in WAYS:
        tpe, ours = (max(rate(make, way, n) for _ in range(r)) for make in makers.values())
        ok = "ok" if ours >= 3 * tpe else "below goal"
        print(f"  {way:<14} {tpe:>20,.0f} {ours:>20,.0f} {ours / tpe:>6.2f}x  (goal >= 3x: {ok})")


if __name__ == "__main__":
    main()
