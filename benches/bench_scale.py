"""Scale: 1,000,000 pending one-shot schedules an hour ahead, workhorse vs asyncio vs APScheduler.

Run: .venv/bin/python benches/bench_scale.py [--count N] [--apscheduler-count M] [--idle S]
     [--skip-apscheduler]

For each contender, in a fresh spawned process:
- insertion rate: N schedules 3600 s ahead, timed without tracemalloc;
  workhorse `worker.perform_in(job, 3600)`, asyncio `loop.call_later(3600, fn)` from inside the
  running loop, APScheduler 3.x `add_job(fn, trigger="date", run_date=now + 1 h)` on a started
  BackgroundScheduler with the default MemoryJobStore;
- idle CPU: process_time() used while the process sleeps `--idle` seconds with them all pending;
- stop: workhorse `worker.stop(timeout=5)`, APScheduler `shutdown(wait=True)`, asyncio the
  teardown of asyncio.run (loop close with the timers still pending);
- memory: the RSS delta (/proc/self/statm) around insertion in the timing process, and in a
  second fresh process with tracemalloc started before inserting, the traced delta (the Python
  side). RSS delta minus the traced delta approximates what lives outside Python's allocator (for
  workhorse, the Rust core). The two come from separate processes because tracemalloc's own
  bookkeeping (a malloc'd trace per allocation) inflates the RSS of the traced process by more
  than get_tracemalloc_memory() reports. asyncio's row is the control: it is pure Python, so its
  "B other" shows the method's error.

The same Job (or callback) is reused for every schedule, so per-schedule figures are the cost of
scheduling only. APScheduler is run at --apscheduler-count (default 100,000) because inserting is
slow; its 1,000,000 figures are a linear extrapolation and labelled as such (its MemoryJobStore
inserts into a sorted list, so the real cost grows faster than linearly, not slower).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import gc
import logging
import multiprocessing
import resource
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

Result = dict[str, Any]
DELAY = 3600.0


def noop(*_: object) -> None:
    return None


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


class Probe:
    """RSS (untraced run) or traced Python memory (traced run) before/after a phase."""

    def __init__(self, traced: bool) -> None:
        self.traced = traced
        if traced:
            tracemalloc.start()
        gc.collect()
        self.rss0 = rss_bytes()
        self.py0 = tracemalloc.get_traced_memory()[0] if traced else 0

    def result(self, count: int) -> Result:
        if self.traced:
            return {"py_per": (tracemalloc.get_traced_memory()[0] - self.py0) / count}
        return {"rss_per": (rss_bytes() - self.rss0) / count}


# -- workhorse ---------------------------------------------------------------------------------


def run_workhorse(count: int, idle: float, traced: bool) -> Result:
    import workhorse as wh
    from workhorse import _core

    worker = wh.Worker(concurrency=10)
    worker.register("noop", noop)
    worker.start()
    worker.perform(wh.Job("noop")).wait()  # warm up: threads, runtime, timer thread
    job = wh.Job("noop")
    perform_in = worker.perform_in

    probe = Probe(traced)
    t0 = time.perf_counter()
    for _ in range(count):
        perform_in(job, DELAY)
    insert_s = time.perf_counter() - t0
    out = probe.result(count)
    out["insert_s"] = insert_s
    out["pending_timers"] = _core.pending_timers()
    out["scheduled"] = worker.stats()["scheduled"]
    if traced:
        tracemalloc.stop()
    else:
        cpu0 = time.process_time()
        time.sleep(idle)
        out["idle_cpu"] = time.process_time() - cpu0
    # stop() logs one WARNING ("stopped with N executions not started"); expected here.
    logging.getLogger("workhorse").setLevel(logging.ERROR)
    t = time.perf_counter()
    out["stopped_clean"] = worker.stop(timeout=5)
    out["stop_s"] = time.perf_counter() - t
    out["pending_after_stop"] = _core.pending_timers()
    return out


# -- asyncio -----------------------------------------------------------------------------------


def run_asyncio(count: int, idle: float, traced: bool) -> Result:
    out: Result = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        call_later = loop.call_later
        probe = Probe(traced)
        t0 = time.perf_counter()
        for _ in range(count):
            call_later(DELAY, noop)
        out["insert_s"] = time.perf_counter() - t0
        out.update(probe.result(count))
        if traced:
            tracemalloc.stop()
            return
        cpu0 = time.process_time()
        await asyncio.sleep(idle)
        out["idle_cpu"] = time.process_time() - cpu0
        out["t_end"] = time.perf_counter()

    asyncio.run(main())
    if "t_end" in out:
        out["stop_s"] = time.perf_counter() - out.pop("t_end")
    return out


# -- APScheduler 3.x ---------------------------------------------------------------------------


def run_apscheduler(count: int, idle: float, traced: bool) -> Result:
    import datetime as dt

    from apscheduler.schedulers.background import BackgroundScheduler

    utc = dt.timezone.utc
    sched = BackgroundScheduler(timezone=utc)  # default MemoryJobStore and ThreadPoolExecutor
    sched.start()
    sched.add_job(noop, "date", run_date=dt.datetime.now(utc) + dt.timedelta(seconds=DELAY))
    add_job = sched.add_job
    hour = dt.timedelta(seconds=DELAY)
    now = dt.datetime.now

    probe = Probe(traced)
    t0 = time.perf_counter()
    for _ in range(count):
        add_job(noop, "date", run_date=now(utc) + hour)
    insert_s = time.perf_counter() - t0
    out = probe.result(count)
    out["insert_s"] = insert_s
    if traced:
        tracemalloc.stop()
    else:
        cpu0 = time.process_time()
        time.sleep(idle)
        out["idle_cpu"] = time.process_time() - cpu0
    t = time.perf_counter()
    sched.shutdown(wait=True)
    out["stop_s"] = time.perf_counter() - t
    return out


# -- report ------------------------------------------------------------------------------------


def in_subprocess(fn: Callable[..., Result], *args: Any) -> Result:
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result()


def measure(fn: Callable[..., Result], count: int, idle: float) -> Result:
    timing = in_subprocess(fn, count, idle, False)
    memory = in_subprocess(fn, count, idle, True)
    timing["rate"] = count / timing["insert_s"]
    timing["py_per"] = memory["py_per"]
    timing["other_per"] = timing["rss_per"] - memory["py_per"]
    return timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="pending schedules")
    parser.add_argument("--apscheduler-count", type=int, default=100_000)
    parser.add_argument("--idle", type=float, default=5.0, help="idle seconds measured for CPU")
    parser.add_argument("--skip-apscheduler", action="store_true")
    args = parser.parse_args()
    n, idle = args.count, args.idle

    rows: dict[str, tuple[int, Result]] = {}
    rows["workhorse perform_in"] = (n, measure(run_workhorse, n, idle))
    rows["asyncio loop.call_later"] = (n, measure(run_asyncio, n, idle))
    if not args.skip_apscheduler:
        m = args.apscheduler_count
        rows["APScheduler 3.x add_job(date)"] = (m, measure(run_apscheduler, m, idle))

    print(f"scale: {n:,} pending schedules {DELAY:g} s ahead; idle CPU over {idle:g} s")
    print(
        f"  {'contender':<31} {'count':>9} {'insert/s':>10} {'insert s':>9} {'B/sched RSS':>11} "
        f"{'B py':>7} {'B other':>8} {'idle CPU s':>10} {'stop s':>7}"
    )
    for name, (count, r) in rows.items():
        print(
            f"  {name:<31} {count:>9,} {r['rate']:>10,.0f} {r['insert_s']:>9.2f} "
            f"{r['rss_per']:>11.0f} {r['py_per']:>7.0f} {r['other_per']:>8.0f} "
            f"{r['idle_cpu']:>10.3f} {r['stop_s']:>7.3f}"
        )
    print(
        "  (B/sched RSS: RSS delta per schedule; B py: tracemalloc-traced Python bytes per"
        " schedule;\n   B other = RSS - py: outside Python's allocator, for workhorse ~ the Rust"
        " core; asyncio's is the method's error)"
    )

    w = rows["workhorse perform_in"][1]
    print(
        f"  workhorse: _core.pending_timers() {w['pending_timers']:,} after inserting "
        f"(stats()['scheduled'] {w['scheduled']:,}), {w['pending_after_stop']:,} after stop; "
        f"stop(timeout=5) took {w['stop_s']:.3f} s (clean={w['stopped_clean']})"
    )
    print(
        f"  workhorse memory per schedule: {w['rss_per']:.0f} B RSS = python {w['py_per']:.0f} B"
        f" + core ~{w['other_per']:.0f} B"
    )
    a = rows["asyncio loop.call_later"][1]
    print(
        f"  ratios workhorse / asyncio: insert rate {w['rate'] / a['rate']:.2f}x, "
        f"bytes per schedule (RSS) {w['rss_per'] / a['rss_per']:.2f}x, "
        f"idle CPU {w['idle_cpu']:.3f} s vs {a['idle_cpu']:.3f} s"
    )
    key = "APScheduler 3.x add_job(date)"
    if key in rows:
        m, ap = rows[key]
        print(
            f"  APScheduler extrapolated to {n:,} (linear from {m:,}; a lower bound): "
            f"insert {n / ap['rate']:,.1f} s, memory {ap['rss_per'] * n / 1e6:,.0f} MB RSS "
            f"(workhorse {w['rss_per'] * n / 1e6:,.0f} MB, "
            f"asyncio {a['rss_per'] * n / 1e6:,.0f} MB)"
        )


if __name__ == "__main__":
    main()
