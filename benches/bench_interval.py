"""Interval: N fixed-rate jobs every 10 ms, workhorse vs asyncio, uvloop and APScheduler 3.x.

Run: .venv/bin/python benches/bench_interval.py [--jobs N] [--seconds S] [--interval I]
     [--concurrency C] [--grace G] [--skip-apscheduler]

Each contender runs in a fresh spawned process, so the CPU time it reports (time.process_time(),
all threads of the process) is its own and no state leaks between contenders.

- workhorse: `worker.perform_every(job, interval)` (sync=False) for N jobs, a plain no-op `def`
  handler. Lateness is measured twice: against `job.ctx.scheduled_at` (the core's ideal tick) and
  against our own ideal schedule, t_i + k * interval, where t_i is time.monotonic() just before the
  i-th perform_every call and k counts that job's executions. The two disagree only if the core's
  tick numbering differs from ours (reported as "tick index mismatches").
- asyncio: N tasks, each `await asyncio.sleep(deadline - loop.time())` to start + k * interval;
  uvloop: the same on uvloop's loop (pip install uvloop; the row is skipped without it).
- APScheduler 3.x: BackgroundScheduler, ThreadPoolExecutor(10), IntervalTrigger(interval) with the
  first run at once, coalesce=False, max_instances=1, misfire_grace_time=1 s (its default).
  Runs that APScheduler skips (max_instances reached, or misfired) are reported, not hidden.

Ideal fires = N * (floor(seconds / interval) + 1): the first run at once, then one per tick up to
t_i + seconds. A fire counts if it starts before the cutoff, last t_i + seconds + grace.
Lateness percentiles are over the fires that happened. CPU/wall is process CPU over the run's
wall time (1.0 = one core busy; wall runs from the first registration to the cutoff); RSS is the
process's resident memory at the cutoff; csw/fire is context switches of the whole process
(getrusage, voluntary + involuntary) per counted fire.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import concurrent.futures
import logging
import math
import multiprocessing
import resource
import time
from collections.abc import Callable, Sequence
from typing import Any

Result = dict[str, Any]


# -- helpers -----------------------------------------------------------------------------------


def percentiles_ms(values: Sequence[float]) -> tuple[float, float, float]:
    """p50, p99 and max of values (seconds), in milliseconds; nearest-rank."""
    if not values:
        return (math.nan, math.nan, math.nan)
    s = sorted(values)
    n = len(s)

    def rank(p: float) -> float:
        return s[min(n - 1, max(0, math.ceil(p * n) - 1))] * 1e3

    return (rank(0.50), rank(0.99), s[-1] * 1e3)


def ticks_in_window(seconds: float, interval: float) -> int:
    """floor(seconds / interval), robust to float error (5 / 0.01 must be 500)."""
    return math.floor(seconds / interval + 1e-9)


def switches() -> int:
    """Context switches (voluntary + involuntary) of every thread of this process so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_nvcsw + ru.ru_nivcsw


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 1e6


def in_subprocess(fn: Callable[..., Result], *args: Any) -> Result:
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result()


# -- workhorse ---------------------------------------------------------------------------------


def run_workhorse(
    n: int, seconds: float, interval: float, concurrency: int, grace: float
) -> Result:
    import workhorse as wh

    last_k = ticks_in_window(seconds, interval)
    counts = [0] * n
    starts = [0.0] * n
    own = array.array("d")  # now - (t_i + k * interval)
    core = array.array("d")  # now - job.ctx.scheduled_at
    cutoff = [math.inf]
    mono = time.monotonic

    def tick(job: wh.Job) -> None:
        now = mono()
        i = job.args["i"]
        k = counts[i]
        counts[i] = k + 1
        if k > last_k or now > cutoff[0]:
            return
        own.append(now - starts[i] - k * interval)
        core.append(now - job.ctx.scheduled_at)

    worker = wh.Worker(concurrency=concurrency)
    worker.register("tick", tick)
    worker.register("noop", lambda job: None)
    worker.start()
    worker.perform(wh.Job("noop")).wait()  # warm up: threads, runtime, timer thread

    cpu0 = time.process_time()
    csw0 = switches()
    wall0 = mono()
    schedules = []
    for i in range(n):
        job = wh.Job("tick", {"i": i})
        starts[i] = mono()
        schedules.append(worker.perform_every(job, interval))
    register_s = mono() - wall0
    cutoff[0] = starts[-1] + seconds + grace
    time.sleep(max(0.0, cutoff[0] - mono()))
    cpu = time.process_time() - cpu0
    csw = switches() - csw0
    wall = mono() - wall0
    fires = len(own)
    figures = worker.figures()
    rss = rss_mb()

    t = mono()
    stopped_clean = worker.stop(timeout=5)
    stop_s = mono() - t

    own_l = own[:fires]
    core_l = core[:fires]
    # own - core = scheduled_at - (t_i + k * interval): ~0 unless our k is not the core's tick.
    offsets = [o - c for o, c in zip(own_l, core_l, strict=True)]
    mismatches = sum(1 for d in offsets if abs(d) > interval / 2)
    return {
        "fires": fires,
        "late_core": percentiles_ms(core_l),
        "late_own": percentiles_ms(own_l),
        "mismatches": mismatches,
        "offset_max_ms": max((abs(d) for d in offsets), default=math.nan) * 1e3,
        "cpu": cpu,
        "csw": csw,
        "wall": wall,
        "rss": rss,
        "register_s": register_s,
        "figures": figures,
        "stop_s": stop_s,
        "stopped_clean": stopped_clean,
    }


# -- asyncio -----------------------------------------------------------------------------------


def run_asyncio(n: int, seconds: float, interval: float, grace: float, uv: bool = False) -> Result:
    last_k = ticks_in_window(seconds, interval)
    late = array.array("d")
    cutoff = [math.inf]
    mono = time.monotonic

    async def ticker(start: float) -> None:
        loop = asyncio.get_running_loop()
        for k in range(last_k + 1):
            deadline = start + k * interval
            await asyncio.sleep(deadline - loop.time())
            now = mono()
            if now > cutoff[0]:
                return
            late.append(now - deadline)

    async def main() -> Result:
        loop = asyncio.get_running_loop()
        cpu0 = time.process_time()
        csw0 = switches()
        wall0 = mono()
        tasks = []
        start = wall0
        for _ in range(n):
            start = mono()
            tasks.append(loop.create_task(ticker(start)))
        cutoff[0] = start + seconds + grace
        await asyncio.sleep(cutoff[0] - loop.time())
        cpu = time.process_time() - cpu0
        csw = switches() - csw0
        wall = mono() - wall0
        rss = rss_mb()
        fires = len(late)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        late_l = percentiles_ms(late[:fires])
        return {"fires": fires, "late": late_l, "cpu": cpu, "csw": csw, "wall": wall, "rss": rss}

    factory = None
    if uv:
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


# -- APScheduler 3.x ---------------------------------------------------------------------------


def run_apscheduler(
    n: int, seconds: float, interval: float, threads: int, grace: float, misfire: float
) -> Result:
    import datetime as dt

    from apscheduler.events import (
        EVENT_JOB_EXECUTED,
        EVENT_JOB_MAX_INSTANCES,
        EVENT_JOB_MISSED,
        JobExecutionEvent,
        JobSubmissionEvent,
    )
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    # Every skipped run logs a WARNING; with no logging configured those go to stderr one line
    # each (tens of thousands here). Silenced so the table stays readable; counted below instead.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)

    last_k = ticks_in_window(seconds, interval)
    run_idx = array.array("q")  # job index of each handler start
    run_at = array.array("d")  # time.time() at handler start
    done_idx = array.array("q")  # job index of each EVENT_JOB_EXECUTED
    done_sched = array.array("d")  # its scheduled_run_time (epoch seconds)
    skipped = {"missed": 0, "max_instances": 0}
    wall_now = time.time

    def tick(i: int) -> None:
        now = wall_now()
        run_idx.append(i)
        run_at.append(now)

    def listener(event: JobExecutionEvent | JobSubmissionEvent) -> None:
        if event.code == EVENT_JOB_EXECUTED:
            done_idx.append(int(event.job_id))
            done_sched.append(event.scheduled_run_time.timestamp())
        elif event.code == EVENT_JOB_MISSED:
            skipped["missed"] += 1
        else:
            skipped["max_instances"] += 1

    sched = BackgroundScheduler(
        executors={"default": ThreadPoolExecutor(threads)},
        job_defaults={"coalesce": False, "max_instances": 1, "misfire_grace_time": misfire},
        timezone=dt.timezone.utc,
    )
    sched.add_listener(listener, EVENT_JOB_EXECUTED | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
    sched.start()

    cpu0 = time.process_time()
    csw0 = switches()
    wall0 = time.monotonic()
    starts = [0.0] * n
    for i in range(n):
        first = dt.datetime.now(dt.timezone.utc)
        starts[i] = first.timestamp()
        sched.add_job(
            tick,
            IntervalTrigger(seconds=interval, start_date=first, timezone=dt.timezone.utc),
            args=(i,),
            id=str(i),
            next_run_time=first,  # first run at once, as perform_every does
        )
    register_s = time.monotonic() - wall0
    cutoff = starts[-1] + seconds + grace
    time.sleep(max(0.0, cutoff - time.time()))
    cpu = time.process_time() - cpu0
    csw = switches() - csw0
    wall = time.monotonic() - wall0
    rss = rss_mb()
    t = time.monotonic()
    sched.shutdown(wait=True)
    stop_s = time.monotonic() - t

    # Pair the k-th handler start of a job with the k-th executed event of that job (one
    # instance at a time, so both are in the same order once sorted).
    per_run: list[list[float]] = [[] for _ in range(n)]
    per_sched: list[list[float]] = [[] for _ in range(n)]
    for i, at in zip(run_idx, run_at, strict=True):
        per_run[i].append(at)
    for i, at in zip(done_idx, done_sched, strict=True):
        per_sched[i].append(at)
    vs_sched: list[float] = []
    vs_kth: list[float] = []
    unpaired = 0
    for i in range(n):
        runs = sorted(per_run[i])
        scheds = sorted(per_sched[i])
        unpaired += abs(len(runs) - len(scheds))
        window_end = starts[i] + seconds + 1e-6
        k = 0
        for at, due in zip(runs, scheds, strict=False):
            if at > cutoff or due > window_end:
                continue
            vs_sched.append(at - due)
            if k <= last_k:
                vs_kth.append(at - (starts[i] + k * interval))
            k += 1
    return {
        "fires": len(vs_sched),
        "late": percentiles_ms(vs_sched),
        "late_kth": percentiles_ms(vs_kth),
        "cpu": cpu,
        "csw": csw,
        "wall": wall,
        "rss": rss,
        "register_s": register_s,
        "stop_s": stop_s,
        "unpaired": unpaired,
        **skipped,
    }


# -- report ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="interval jobs (default 1000)")
    parser.add_argument("--seconds", type=float, default=5.0, help="run length (default 5)")
    parser.add_argument("--interval", type=float, default=0.01, help="seconds (default 0.01)")
    parser.add_argument("--concurrency", type=int, default=10, help="workhorse concurrency")
    parser.add_argument("--threads", type=int, default=10, help="APScheduler pool threads")
    parser.add_argument("--misfire-grace", type=float, default=1.0, help="APScheduler, seconds")
    parser.add_argument(
        "--grace", type=float, default=0.5, help="how late a fire may start and still count (s)"
    )
    parser.add_argument("--skip-apscheduler", action="store_true")
    args = parser.parse_args()
    n, secs, ival = args.jobs, args.seconds, args.interval
    ideal = n * (ticks_in_window(secs, ival) + 1)

    w = in_subprocess(run_workhorse, n, secs, ival, args.concurrency, args.grace)
    a = in_subprocess(run_asyncio, n, secs, ival, args.grace)
    try:
        import uvloop  # noqa: F401 - only to know whether the uvloop row can run

        uv = in_subprocess(run_asyncio, n, secs, ival, args.grace, True)
    except ImportError:
        uv = None
        print("(uvloop row skipped: pip install uvloop)")
    ap = None
    if not args.skip_apscheduler:
        ap = in_subprocess(
            run_apscheduler, n, secs, ival, args.threads, args.grace, args.misfire_grace
        )

    print(
        f"interval: {n:,} jobs every {ival * 1e3:g} ms for {secs:g} s, ideal fires {ideal:,} "
        f"(first run at once), count cutoff last start + {secs:g} s + {args.grace:g} s"
    )
    head = f"  {'contender':<44} {'fires':>10} {'ratio':>7} {'p50 ms':>8} {'p99 ms':>8}"
    print(
        head + f" {'max ms':>9} {'CPU s':>7} {'wall s':>6} {'CPU/wall':>8} {'csw/fire':>8}"
        f" {'RSS MB':>7}"
    )

    def row(name: str, fires: int, late: tuple[float, float, float], r: Result) -> None:
        p50, p99, mx = late
        print(
            f"  {name:<44} {fires:>10,} {fires / ideal:>7.4f} {p50:>8.3f} {p99:>8.3f} "
            f"{mx:>9.3f} {r['cpu']:>7.2f} {r['wall']:>6.1f} {r['cpu'] / r['wall']:>8.0%} "
            f"{r['csw'] / max(fires, 1):>8.2f} {r['rss']:>7.0f}"
        )

    row("workhorse perform_every (vs ctx.scheduled_at)", w["fires"], w["late_core"], w)
    row("workhorse perform_every (vs own t_i + k*iv)", w["fires"], w["late_own"], w)
    row("asyncio tasks, sleep to deadline", a["fires"], a["late"], a)
    if uv is not None:
        row("uvloop tasks, sleep to deadline", uv["fires"], uv["late"], uv)
    if ap is not None:
        row("APScheduler 3.x (vs scheduled_run_time)", ap["fires"], ap["late"], ap)
        row("APScheduler 3.x (k-th run vs k-th tick)", ap["fires"], ap["late_kth"], ap)

    f = w["figures"]
    ticks = f.get("interval_ticks_total", 0.0)
    mean = f.get("interval_lateness_seconds_sum", 0.0) / ticks * 1e3 if ticks else math.nan
    print(
        f"  workhorse: registering {n:,} took {w['register_s'] * 1e3:.1f} ms; "
        f"tick index mismatches {w['mismatches']:,} (max |own - core| {w['offset_max_ms']:.3f} ms)"
    )
    print(
        f"  workhorse core figures at cutoff: interval_ticks_total {ticks:,.0f}, "
        f"timer lateness mean {mean:.3f} ms / max "
        f"{f.get('interval_lateness_seconds_max', math.nan) * 1e3:.3f} ms, "
        f"interval_skipped_ticks_total {f['interval_skipped_ticks_total']:,.0f}"
    )
    print(
        f"  workhorse core queues at cutoff: due {f.get('due', 0.0):,.0f}, ready "
        f"{f.get('ready', 0.0):,.0f}, in_flight {f.get('in_flight', 0.0):,.0f}, completed "
        f"{f.get('completed_total', 0.0):,.0f}; stop(timeout=5) took {w['stop_s']:.3f} s "
        f"(clean={w['stopped_clean']})"
    )
    if ap is not None:
        print(
            f"  APScheduler: add_job x {n:,} took {ap['register_s']:.2f} s; skipped runs: "
            f"{ap['max_instances']:,} max_instances reached, "
            f"{ap['missed']:,} misfired (> {args.misfire_grace:g} s late); "
            f"shutdown(wait=True) took {ap['stop_s']:.3f} s; unpaired runs/events "
            f"{ap['unpaired']}"
        )

    big = n >= 10_000
    ratio_goal, p99_goal = (0.99, 5.0) if big else (0.999, 1.0)
    ratio = w["fires"] / ideal
    p99_own, p99_core = w["late_own"][1], w["late_core"][1]

    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    print(f"  goals (set for N={'10,000' if big else '1,000'}):")
    print(f"    fire ratio {ratio:.4f} (goal >= {ratio_goal})  {verdict(ratio >= ratio_goal)}")
    print(
        f"    p99 lateness {p99_own:.3f} ms vs own schedule, {p99_core:.3f} ms vs "
        f"ctx.scheduled_at (goal <= {p99_goal:g} ms)  {verdict(max(p99_own, p99_core) <= p99_goal)}"
    )
    lean = a if uv is None or a["cpu"] <= uv["cpu"] else uv
    cpu_ratio = w["cpu"] / lean["cpu"] if lean["cpu"] > 0 else math.inf
    goal = "(goal <= 0.5 at N=1,000)" if not big else "(no goal at this N)"
    lean_name = "asyncio" if lean is a else "uvloop"
    print(f"    CPU workhorse / the leaner loop ({lean_name}) {cpu_ratio:.2f}x {goal}", end="")
    print(f"  {verdict(cpu_ratio <= 0.5)}" if not big else "")


if __name__ == "__main__":
    main()
