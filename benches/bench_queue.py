"""Durable queue on one redis-server: workhorse vs dramatiq, huey, arq, saq, rq and celery.

Run: make bench-queue
     (or .venv-bench/bin/python benches/bench_queue.py [--quick] [--skip PEER] [--jobs N])

The peers are not dependencies of workhorse: `make bench-queue` installs them into .venv-bench.
The script starts its own redis-server on a free loopback port (`--save '' --appendonly no`,
never the machine's 6379), flushes it before every contender and kills it at exit.

Every contender runs in a fresh child process (this script with --child), bounded by --timeout,
so a stuck peer is reported, not waited for:
- throughput (gocraft/work's shape): N no-op jobs over 5 names enqueued (the first --one-jobs
  one call at a time, the rest with the peer's batch path), then processed by one worker process
  at concurrency 50 with the peer's own setup (printed below the table). processed/s is N over
  first handler start -> N-th handler end; "incl. start" also counts the worker's start-up.
- latency: an idle worker, one job at a time: enqueue call -> handler's first line, then a gap.
- workhorse alone: enqueue_many, a single sync enqueue against a bare sequential PING loop
  (raw socket RESP, and redis-py), aenqueue from 100 asyncio tasks; memory:// processed/s.
Prints the tables, the ratios workhorse / each peer and issue 8's goals with ok/MISSED.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.metadata
import itertools
import json
import math
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

clock = time.perf_counter
NAMES = [f"noop_{i}" for i in range(5)]
CONCURRENCY = 50
PEERS = ["dramatiq", "huey", "arq", "saq", "rq", "celery"]
CONTENDERS = ["workhorse", "workhorse-async", *PEERS]
PIP = {
    "dramatiq": "dramatiq[redis]",
    "huey": "huey redis",
    "arq": "arq",
    "saq": "saq",
    "rq": "rq",
    "celery": "celery[redis]",
}


# -- a minimal RESP client: PING loop, FLUSHALL, INFO (no redis-py needed) ------------------------


class Resp:
    """One connection speaking RESP2, for the bench's own commands."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def call(self, *args: str) -> Any:
        out = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = a.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(out))
        return self._read()

    def _read(self) -> Any:
        line = self.file.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self.file.read(size + 2)[:-2].decode()
        if kind == b"*":
            return [self._read() for _ in range(int(rest))]
        raise RuntimeError(f"unexpected reply {line!r}")

    def cpu(self) -> float:
        """redis-server's CPU seconds so far (user + sys)."""
        info = dict(
            line.split(":", 1) for line in self.call("INFO", "cpu").splitlines() if ":" in line
        )
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def ping_loop_raw(url: str, n: int) -> float:
    """A bare sequential PING loop over a raw socket: the floor for one round trip from Python."""
    with socket.create_connection((urlsplit(url).hostname, urlsplit(url).port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ping, send, recv = b"*1\r\n$4\r\nPING\r\n", s.sendall, s.recv
        t0 = clock()
        for _ in range(n):
            send(ping)
            reply = recv(64)
            while not reply.endswith(b"\r\n"):
                reply += recv(64)
        return n / (clock() - t0)


def ping_loop_redis_py(url: str, n: int) -> float | None:
    try:
        import redis
    except ImportError:
        return None
    r = redis.Redis.from_url(url)
    r.ping()
    t0 = clock()
    for _ in range(n):
        r.ping()
    rate = n / (clock() - t0)
    r.close()
    return rate


# -- the redis-server of this run -----------------------------------------------------------------


class RedisServer:
    """A redis-server of our own on a free loopback port, killed at exit."""

    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            sys.exit("bench_queue: redis-server is not installed (apt-get install redis-server)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = tempfile.mkdtemp(prefix="bench-queue-redis-")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                r = Resp(self.url)
                if r.call("PING") == "PONG":
                    self.version = r.call("INFO", "server").split("redis_version:")[1].split()[0]
                    r.close()
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                sys.exit("bench_queue: redis-server did not start")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def flush(self) -> None:
        r = Resp(self.url)
        r.call("FLUSHALL")
        r.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


# -- the handlers: the same no-op for every contender ---------------------------------------------


class Tally:
    """What the handlers record: first start, the latest start, and when the target-th ended."""

    def __init__(self) -> None:
        self.reset(0)

    def reset(self, target: int) -> None:
        self.target = target
        self.count = itertools.count(1)
        self.done_count = 0
        self.first = 0.0
        self.started = 0.0
        self.last = 0.0
        self.done = threading.Event()
        self.adone: asyncio.Event | None = None

    def start(self) -> None:
        self.started = now = clock()
        if not self.first:
            self.first = now

    def end(self) -> None:
        n = self.done_count = next(self.count)  # itertools.count is atomic under the GIL
        if n == self.target:
            self.last = clock()
            self.done.set()
            if self.adone is not None:
                self.adone.set()


TALLY = Tally()


# Module-level functions: rq and celery find a job's function by its import path.
def noop_0(*_a: Any, **_k: Any) -> None:
    TALLY.start()
    TALLY.end()


def noop_1(*_a: Any, **_k: Any) -> None:
    TALLY.start()
    TALLY.end()


def noop_2(*_a: Any, **_k: Any) -> None:
    TALLY.start()
    TALLY.end()


def noop_3(*_a: Any, **_k: Any) -> None:
    TALLY.start()
    TALLY.end()


def noop_4(*_a: Any, **_k: Any) -> None:
    TALLY.start()
    TALLY.end()


async def anoop(*_a: Any, **_k: Any) -> None:
    TALLY.start()
    TALLY.end()


SYNC_HANDLERS = dict(zip(NAMES, [noop_0, noop_1, noop_2, noop_3, noop_4], strict=True))


# -- contenders: each one's own recommended setup -------------------------------------------------


class Contender:
    """A sync contender: enqueue paths and a worker started in this process."""

    blocking = False  # True: the worker must own the main thread (run_forever)

    def enqueue_one(self, name: str) -> None:
        raise NotImplementedError

    def enqueue_batch(self, names: list[str]) -> None:
        for name in names:
            self.enqueue_one(name)

    def start(self) -> None:
        raise NotImplementedError

    def run_forever(self, burst: bool) -> None:
        raise NotImplementedError

    def finish(self) -> dict[str, Any]:
        return {}


class Workhorse(Contender):
    def __init__(self, url: str, concurrency: int, is_async: bool) -> None:
        import workhorse as wh

        self.queue = wh.Queue.from_url(url, namespace="bench")
        self.worker = wh.Worker(concurrency=concurrency, queue=self.queue)
        for name, fn in SYNC_HANDLERS.items():
            self.worker.register(name, anoop if is_async else fn)

    def enqueue_one(self, name: str) -> None:
        self.queue.enqueue(name)

    def enqueue_batch(self, names: list[str]) -> None:
        self.queue.enqueue_many([(name, None) for name in names])

    def start(self) -> None:
        self.worker.start()

    def finish(self) -> dict[str, Any]:
        t0 = clock()
        drained = self.worker.drain(10)
        t1 = clock()
        stopped = self.worker.stop(10)
        return {"drained": drained, "drain_s": t1 - t0, "stopped": stopped, "stop_s": clock() - t1}


class Dramatiq(Contender):
    def __init__(self, url: str, concurrency: int) -> None:
        import dramatiq
        from dramatiq.brokers.redis import RedisBroker

        self.concurrency = concurrency
        self.broker = RedisBroker(url=url)
        dramatiq.set_broker(self.broker)
        self.actors = {
            name: dramatiq.actor(fn, actor_name=name, broker=self.broker)
            for name, fn in SYNC_HANDLERS.items()
        }

    def enqueue_one(self, name: str) -> None:
        self.actors[name].send()

    def start(self) -> None:
        import dramatiq

        self.worker = dramatiq.Worker(self.broker, worker_threads=self.concurrency)
        self.worker.start()


class Huey(Contender):
    def __init__(self, url: str, concurrency: int) -> None:
        from huey import RedisHuey

        self.concurrency = concurrency
        self.huey = RedisHuey("bench", url=url)
        self.tasks = {name: self.huey.task(name=name)(fn) for name, fn in SYNC_HANDLERS.items()}

    def enqueue_one(self, name: str) -> None:
        self.tasks[name]()

    def start(self) -> None:
        self.consumer = self.huey.create_consumer(workers=self.concurrency, worker_type="thread")
        self.consumer.start()


class Rq(Contender):
    blocking = True

    def __init__(self, url: str, concurrency: int) -> None:
        from redis import Redis
        from rq import Queue

        self.conn = Redis.from_url(url)
        self.queue = Queue("default", connection=self.conn)

    def enqueue_one(self, name: str) -> None:
        self.queue.enqueue(SYNC_HANDLERS[name])

    def enqueue_batch(self, names: list[str]) -> None:
        from rq import Queue

        for start in range(0, len(names), 10_000):
            chunk = names[start : start + 10_000]
            self.queue.enqueue_many([Queue.prepare_data(SYNC_HANDLERS[n]) for n in chunk])

    def run_forever(self, burst: bool) -> None:
        from rq import SimpleWorker

        SimpleWorker([self.queue], connection=self.conn).work(burst=burst, logging_level="WARNING")


class Celery(Contender):
    blocking = True

    def __init__(self, url: str, concurrency: int) -> None:
        from celery import Celery as App

        self.concurrency = concurrency
        self.app = App("bench", broker=url, set_as_current=True)
        self.app.conf.update(task_ignore_result=True, broker_connection_retry_on_startup=True)
        self.tasks = {name: self.app.task(fn, name=name) for name, fn in SYNC_HANDLERS.items()}

    def enqueue_one(self, name: str) -> None:
        self.tasks[name].delay()

    def run_forever(self, burst: bool) -> None:
        # What `celery -A bench worker ...` runs, in this (child) process.
        self.app.worker_main(
            ["worker", "-P", "threads", "-c", str(self.concurrency), "--without-gossip",
             "--without-mingle", "--without-heartbeat", "-l", "WARNING"]
        )  # fmt: skip


class AsyncContender:
    """An asyncio contender: the worker runs as a task on this loop."""

    async def open(self) -> None:
        raise NotImplementedError

    async def enqueue_one(self, name: str) -> None:
        raise NotImplementedError

    async def enqueue_batch(self, names: list[str]) -> None:
        # Neither arq nor saq has a batch enqueue: 100 concurrent awaits at a time.
        for start in range(0, len(names), 100):
            await asyncio.gather(*(self.enqueue_one(n) for n in names[start : start + 100]))

    async def start(self) -> None:
        raise NotImplementedError


class Arq(AsyncContender):
    def __init__(self, url: str, concurrency: int) -> None:
        self.url = url
        self.concurrency = concurrency

    async def open(self) -> None:
        from arq import create_pool
        from arq.connections import RedisSettings

        self.settings = RedisSettings.from_dsn(self.url)
        self.pool = await create_pool(self.settings)

    async def enqueue_one(self, name: str) -> None:
        await self.pool.enqueue_job(name)

    async def start(self) -> None:
        from arq.worker import Worker, func

        functions = [func(anoop, name=name) for name in NAMES]
        self.worker = Worker(
            functions,
            redis_settings=self.settings,
            max_jobs=self.concurrency,
            handle_signals=False,
        )
        self.task = asyncio.ensure_future(self.worker.async_run())


class Saq(AsyncContender):
    def __init__(self, url: str, concurrency: int) -> None:
        self.url = url
        self.concurrency = concurrency

    async def open(self) -> None:
        from saq import Queue

        self.queue = Queue.from_url(self.url)
        await self.queue.connect()

    async def enqueue_one(self, name: str) -> None:
        await self.queue.enqueue(name)

    async def start(self) -> None:
        from saq import Worker

        functions: Any = [(name, anoop) for name in NAMES]
        self.worker = Worker(self.queue, functions, concurrency=self.concurrency)
        self.task = asyncio.ensure_future(self.worker.start())


def make(peer: str, url: str, concurrency: int) -> Contender | AsyncContender:
    if peer == "workhorse":
        return Workhorse(url, concurrency, is_async=False)
    if peer == "workhorse-async":
        return Workhorse(url, concurrency, is_async=True)
    classes: dict[str, Any] = {
        "dramatiq": Dramatiq, "huey": Huey, "rq": Rq, "celery": Celery, "arq": Arq, "saq": Saq,
    }  # fmt: skip
    return classes[peer](url, concurrency)


SETUP = {
    "workhorse": "wh.Queue.from_url(url, namespace='bench'); batch: enqueue_many (10,000 per "
    "round trip); wh.Worker(concurrency=50, queue=q), plain def handlers, start() in-process",
    "workhorse-async": "as workhorse, with async def handlers (run on the worker's asyncio loop)",
    "dramatiq": "RedisBroker(url=...), default middleware; actor.send() per job (no batch API); "
    "dramatiq.Worker(broker, worker_threads=50) in-process (what the CLI runs per process)",
    "huey": "RedisHuey('bench', url=...) (blocking BRPOP, pickle); task() per job (map() is the "
    "same loop); huey.create_consumer(workers=50, worker_type='thread').start()",
    "arq": "create_pool(RedisSettings.from_dsn(url)); enqueue_job per job, batch = 100 concurrent "
    "awaits; Worker(max_jobs=50), defaults otherwise: poll_delay 0.5 s and up to 250 ids read "
    "per poll (a ceiling near 500 jobs/s), async handlers",
    "saq": "Queue.from_url(url); queue.enqueue per job, batch = 100 concurrent awaits; "
    "Worker(queue, functions, concurrency=50) (listen/notify dequeue), async handlers",
    "rq": "Queue('default'); batch: enqueue_many(prepare_data(...)) pipelined 10,000 a call; "
    "SimpleWorker(...).work(burst=True): no fork per job, one job at a time",
    "celery": "Celery(broker=redis://...), task_ignore_result; task.delay() per job (no batch "
    "API); app.worker_main(['worker', '-P', 'threads', '-c', '50', '--without-gossip', "
    "'--without-mingle', '--without-heartbeat']), i.e. the celery worker CLI in the child",
}


# -- the child: one contender, one phase ----------------------------------------------------------


def redis_cpu(url: str) -> float | None:
    if not url.startswith("redis"):
        return None
    r = Resp(url)
    try:
        return r.cpu()
    finally:
        r.close()


def own_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def write_result(path: str, result: dict[str, Any]) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(result, f)
    os.replace(path + ".tmp", path)


def progress_writer(path: str) -> None:
    """Write how many handlers ended, twice a second: the parent reports it on a timeout."""

    def run() -> None:
        while True:
            with contextlib.suppress(OSError):
                with open(path + ".progress", "w") as f:
                    f.write(str(TALLY.done_count))
            time.sleep(0.5)

    threading.Thread(target=run, daemon=True).start()


def job_names(n: int) -> list[str]:
    return [NAMES[i % len(NAMES)] for i in range(n)]


def processing_result(res: dict[str, Any], t_start: float, cpu0: float, rcpu0: float | None,
                      url: str, n: int) -> dict[str, Any]:  # fmt: skip
    rcpu1 = redis_cpu(url)
    res.update(
        n=n,
        processed=TALLY.done_count,
        worker_start=t_start,
        first=TALLY.first,
        last=TALLY.last,
        cpu_s=own_cpu() - cpu0,
        redis_cpu_s=None if rcpu0 is None or rcpu1 is None else rcpu1 - rcpu0,
    )
    return res


def latency_plan(args: argparse.Namespace) -> Iterator[bool]:
    """Per job, whether it is measured: first up to --warmup unmeasured ones (at most 2 s of
    them: arq polls every 0.5 s), then up to --iterations measured within --latency-seconds."""
    end = time.monotonic() + 2.0
    for _ in range(args.warmup):
        if time.monotonic() > end:
            break
        yield False
    end = time.monotonic() + args.latency_seconds
    for _ in range(args.iterations):
        if time.monotonic() > end:
            return
        yield True


def child_sync(c: Contender, args: argparse.Namespace) -> None:
    url, out = args.url, args.out
    if args.phase == "throughput":
        n = args.jobs
        names = job_names(n)
        m = min(args.one_jobs, n // 2)
        TALLY.reset(n)
        res: dict[str, Any] = {}
        t0 = clock()
        for name in names[:m]:
            c.enqueue_one(name)
        res["one_n"], res["one_s"] = m, clock() - t0
        t0 = clock()
        c.enqueue_batch(names[m:])
        res["batch_n"], res["batch_s"] = n - m, clock() - t0
        progress_writer(out)
        rcpu0, cpu0, t_start = redis_cpu(url), own_cpu(), clock()

        def wait_and_write() -> None:
            TALLY.done.wait()
            result = processing_result(res, t_start, cpu0, rcpu0, url, n)
            result.update(c.finish())
            write_result(out, result)
            os._exit(0)

        if c.blocking:
            threading.Thread(target=wait_and_write, daemon=True).start()
            c.run_forever(burst=True)
            time.sleep(args.timeout)  # wait_and_write ends the process
        else:
            c.start()
            wait_and_write()
    else:
        lat: list[float] = []

        def measure() -> None:
            # Warm-up: the worker is running and idle before the first timed job.
            TALLY.reset(1)
            c.enqueue_one(NAMES[0])
            TALLY.done.wait()
            time.sleep(0.2)
            for i, measured in enumerate(latency_plan(args)):
                TALLY.reset(1)
                t0 = clock()
                c.enqueue_one(NAMES[i % len(NAMES)])
                if not TALLY.done.wait(10):
                    break
                if measured:
                    lat.append(TALLY.started - t0)
                time.sleep(args.gap)
            write_result(out, {"latency": lat, **c.finish()})
            os._exit(0)

        if c.blocking:
            threading.Thread(target=measure, daemon=True).start()
            c.run_forever(burst=False)
            time.sleep(args.timeout)
        else:
            c.start()
            measure()


async def child_async(c: AsyncContender, args: argparse.Namespace) -> None:
    url, out = args.url, args.out
    await c.open()
    TALLY.adone = asyncio.Event()
    if args.phase == "throughput":
        n = args.jobs
        names = job_names(n)
        m = min(args.one_jobs, n // 2)
        TALLY.reset(n)
        TALLY.adone = asyncio.Event()
        res: dict[str, Any] = {}
        t0 = clock()
        for name in names[:m]:
            await c.enqueue_one(name)
        res["one_n"], res["one_s"] = m, clock() - t0
        t0 = clock()
        await c.enqueue_batch(names[m:])
        res["batch_n"], res["batch_s"] = n - m, clock() - t0
        progress_writer(out)
        rcpu0, cpu0, t_start = redis_cpu(url), own_cpu(), clock()
        await c.start()
        await TALLY.adone.wait()
        write_result(out, processing_result(res, t_start, cpu0, rcpu0, url, n))
    else:
        await c.start()
        TALLY.reset(1)
        TALLY.adone = asyncio.Event()
        await c.enqueue_one(NAMES[0])
        await TALLY.adone.wait()
        await asyncio.sleep(0.2)
        lat: list[float] = []
        for i, measured in enumerate(latency_plan(args)):
            TALLY.reset(1)
            event = TALLY.adone = asyncio.Event()
            t0 = clock()
            await c.enqueue_one(NAMES[i % len(NAMES)])
            try:
                await asyncio.wait_for(event.wait(), 10)
            except asyncio.TimeoutError:
                break
            if measured:
                lat.append(TALLY.started - t0)
            await asyncio.sleep(args.gap)
        write_result(out, {"latency": lat})
    os._exit(0)


def child_micro(args: argparse.Namespace) -> None:
    """workhorse's enqueue paths against a bare PING loop, best of --repeat, interleaved."""
    import workhorse as wh

    url, n, m = args.url, args.jobs, args.one_jobs
    queue = wh.Queue.from_url(url, namespace="bench")
    flusher = Resp(url)
    names = job_names(max(n, m))
    pairs = [(name, None) for name in names[:n]]
    best: dict[str, float] = {}

    def keep(key: str, rate: float | None) -> None:
        if rate is not None:
            best[key] = max(best.get(key, 0.0), rate)

    async def aenqueue_tasks(tasks: int) -> float:
        per = n // tasks

        async def one_task(k: int) -> None:
            for i in range(per):
                await queue.aenqueue(NAMES[(k + i) % len(NAMES)])

        t0 = clock()
        await asyncio.gather(*(one_task(k) for k in range(tasks)))
        return per * tasks / (clock() - t0)

    queue.enqueue(NAMES[0])  # connect, load the scripts
    for _ in range(args.repeat):
        flusher.call("FLUSHALL")
        keep("ping_raw", ping_loop_raw(url, m))
        keep("ping_redis_py", ping_loop_redis_py(url, m))
        flusher.call("CONFIG", "RESETSTAT")
        t0 = clock()
        for name in names[:m]:
            queue.enqueue(name)
        rate = m / (clock() - t0)
        if rate > best.get("enqueue", 0.0):
            # Of each call's time, how much redis-server spent running the enqueue script.
            stats = flusher.call("INFO", "commandstats")
            evalsha = stats.split("cmdstat_evalsha:")[1].split()[0]
            best["enqueue_redis_us"] = float(evalsha.split("usec_per_call=")[1].split(",")[0])
        keep("enqueue", rate)
        flusher.call("FLUSHALL")
        t0 = clock()
        queue.enqueue_many(pairs)
        keep("enqueue_many", n / (clock() - t0))
        flusher.call("FLUSHALL")
        keep("aenqueue_100", asyncio.run(aenqueue_tasks(100)))
    flusher.call("FLUSHALL")
    write_result(args.out, best)
    os._exit(0)


def child_main(args: argparse.Namespace) -> None:
    if args.phase == "micro":
        child_micro(args)
        return
    c = make(args.child, args.url, args.concurrency)
    if isinstance(c, AsyncContender):
        asyncio.run(child_async(c, args))
    else:
        child_sync(c, args)


# -- the parent: runs each child with a timeout, prints the tables --------------------------------


def run_child(args: argparse.Namespace, peer: str, phase: str, url: str,
              tmp: str) -> tuple[dict[str, Any] | None, str]:  # fmt: skip
    """Run one child to its result file or timeout; (result, "" or what went wrong)."""
    out = os.path.join(tmp, f"{peer}-{phase}-{urlsplit(url).scheme}.json")
    cmd = [
        sys.executable, os.path.abspath(__file__), "--child", peer, "--phase", phase,
        "--url", url, "--out", out, "--jobs", str(args.jobs), "--one-jobs", str(args.one_jobs),
        "--concurrency", str(args.concurrency), "--iterations", str(args.iterations),
        "--warmup", str(args.warmup), "--gap", str(args.gap),
        "--latency-seconds", str(args.latency_seconds), "--timeout", str(args.timeout),
        "--repeat", str(args.repeat),
    ]  # fmt: skip
    log_path = out + ".log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + args.timeout
    problem = ""
    try:
        while proc.poll() is None:
            if os.path.exists(out):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)  # the child ends itself once its result is written
                break
            if time.monotonic() > deadline:
                done = ""
                with contextlib.suppress(OSError), open(out + ".progress") as f:
                    done = f", {int(f.read() or 0):,} jobs done"
                problem = f"TIMEOUT after {args.timeout:.0f} s{done}"
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if os.path.exists(out):
        with open(out) as f:
            return json.load(f), ""
    if not problem:
        with open(log_path, errors="replace") as f:
            tail = [line.strip() for line in f.read().splitlines() if line.strip()][-3:]
        problem = f"failed (exit {proc.returncode}): " + " | ".join(tail)[-300:]
    return None, problem


def percentile_ms(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(p * len(s)) - 1))] * 1e3


def installed(peer: str) -> bool:
    module = peer.split("-")[0]
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def version_of(peer: str) -> str:
    try:
        return importlib.metadata.version(peer.split("-")[0])
    except importlib.metadata.PackageNotFoundError:
        return "-"


def fmt_rate(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def goal_line(text: str, ok: bool | None) -> str:
    verdict = "not measured" if ok is None else ("ok" if ok else "MISSED")
    return f"    {text}  {verdict}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=None, help="jobs per throughput run")
    parser.add_argument("--quick", action="store_true", help="10,000 jobs, shorter runs")
    parser.add_argument(
        "--skip", action="append", default=[], metavar="PEER",
        help=f"skip a contender (repeat, or comma-separate): {', '.join(CONTENDERS)}, memory",
    )  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--one-jobs", type=int, default=None, help="single enqueues timed")
    parser.add_argument("--iterations", type=int, default=None, help="latency samples")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--gap", type=float, default=0.002, help="s between latency jobs")
    parser.add_argument("--latency-seconds", type=float, default=None, help="cap per contender")
    parser.add_argument("--timeout", type=float, default=None, help="s per child run")
    parser.add_argument("--repeat", type=int, default=3, help="best of, for workhorse's enqueue")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    quick = args.quick
    args.jobs = args.jobs or (10_000 if quick else 100_000)
    args.one_jobs = args.one_jobs or (2_000 if quick else 10_000)
    args.iterations = args.iterations or (200 if quick else 1_000)
    args.latency_seconds = args.latency_seconds or (5.0 if quick else 20.0)
    args.timeout = args.timeout or (120.0 if quick else 420.0)
    if args.child:
        child_main(args)
        return

    skip = {s.strip() for item in args.skip for s in item.split(",") if s.strip()}
    unknown = skip - set(CONTENDERS) - {"memory"}
    if unknown:
        parser.error(f"unknown --skip {', '.join(sorted(unknown))}; choose from "
                     f"{', '.join(CONTENDERS)}, memory")  # fmt: skip

    server = RedisServer()
    tmp = tempfile.mkdtemp(prefix="bench-queue-")

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    load0 = os.getloadavg()
    t_begin = time.monotonic()
    rows: dict[str, dict[str, Any]] = {}
    notes: dict[str, str] = {}
    micro: dict[str, float] | None = None
    try:
        for peer in CONTENDERS:
            if peer in skip:
                continue
            if not installed(peer):
                notes[peer] = f"not installed (pip install {PIP.get(peer, peer)})"
                continue
            print(f"  running {peer} ...", file=sys.stderr, flush=True)
            row: dict[str, Any] = {}
            for phase in ("throughput", "latency"):
                server.flush()
                result, problem = run_child(args, peer, phase, server.url, tmp)
                if result is None:
                    notes[peer] = f"{phase}: {problem}"
                    if phase == "throughput":
                        break
                else:
                    row.update(result)
                row.setdefault("load", os.getloadavg()[0])  # after its throughput run
            rows[peer] = row
        if "workhorse" not in skip:
            print("  running workhorse enqueue paths ...", file=sys.stderr, flush=True)
            server.flush()
            micro, problem = run_child(args, "workhorse", "micro", server.url, tmp)
            if micro is None:
                notes["workhorse enqueue"] = problem
        if "memory" not in skip:
            print("  running workhorse memory:// ...", file=sys.stderr, flush=True)
            row = {}
            for phase in ("throughput", "latency"):
                result, problem = run_child(args, "workhorse", phase, "memory://bench", tmp)
                if result is None:
                    notes["workhorse memory://"] = f"{phase}: {problem}"
                else:
                    row.update(result)
                row.setdefault("load", os.getloadavg()[0])
            rows["workhorse memory://"] = row
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    load1 = os.getloadavg()
    report(args, server, rows, notes, micro, load0, load1, time.monotonic() - t_begin)


def report(args: argparse.Namespace, server: RedisServer, rows: dict[str, dict[str, Any]],
           notes: dict[str, str], micro: dict[str, float] | None, load0: tuple[float, ...],
           load1: tuple[float, ...], elapsed: float) -> None:  # fmt: skip
    n = args.jobs
    print(
        f"queue: {n:,} no-op jobs over {len(NAMES)} names, enqueued then processed by one worker "
        f"process at concurrency {args.concurrency}; redis-server {server.version} on 127.0.0.1 "
        f"(--save '' --appendonly no), flushed before each contender"
    )
    print(
        f"  {os.cpu_count()} CPUs; load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} at "
        f"start, {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} at end; run took {elapsed:.0f} s"
    )
    print(
        "  (enqueue one: the first "
        f"{min(args.one_jobs, n // 2):,} jobs one call at a time; batch: the rest with the "
        "peer's batch path; processed/s: first handler start -> last handler end; incl. start: "
        "from the worker's start call; CPU: the worker process and redis-server while "
        "processing; load 1m: the load average after that contender's run)"
    )
    head = (
        f"  {'contender':<20} {'enqueue one/s':>13} {'batch/s':>10} {'processed/s':>12} "
        f"{'incl. start':>12} {'worker CPU s':>12} {'redis CPU s':>11} {'load 1m':>8}"
    )
    print(head)
    rates: dict[str, dict[str, float]] = {}
    for peer, r in rows.items():
        if "processed" not in r:
            continue
        one = r["one_n"] / r["one_s"] if r.get("one_s") else None
        batch = r["batch_n"] / r["batch_s"] if r.get("batch_s") else None
        proc = n / (r["last"] - r["first"]) if r["last"] > r["first"] else None
        incl = n / (r["last"] - r["worker_start"]) if r["last"] > r["worker_start"] else None
        rates[peer] = {k: v for k, v in (("one", one), ("batch", batch), ("proc", proc),
                                          ("incl", incl)) if v is not None}  # fmt: skip
        rcpu = "-" if r.get("redis_cpu_s") is None else f"{r['redis_cpu_s']:.2f}"
        print(
            f"  {peer:<20} {fmt_rate(one):>13} {fmt_rate(batch):>10} {fmt_rate(proc):>12} "
            f"{fmt_rate(incl):>12} {r['cpu_s']:>12.2f} {rcpu:>11} {r['load']:>8.2f}"
        )
    for peer, note in notes.items():
        print(f"  {peer:<20} {note}")
    wh_row = rows.get("workhorse", {})
    if "drained" in wh_row:
        print(
            f"  workhorse after the last handler: drain() {wh_row['drained']} in "
            f"{wh_row['drain_s'] * 1e3:.0f} ms (acks applied), stop() {wh_row['stopped']} in "
            f"{wh_row['stop_s'] * 1e3:.0f} ms"
        )

    print(
        f"\nlatency: idle worker, one job at a time, enqueue call -> handler start "
        f"({args.gap * 1e3:g} ms gap, up to {args.iterations:,} after {args.warmup} warm-up, "
        f"at most {args.latency_seconds:g} s each)"
    )
    print(f"  {'contender':<20} {'samples':>8} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    lat: dict[str, tuple[float, float]] = {}
    for peer, r in rows.items():
        values = r.get("latency")
        if not values:
            continue
        p50, p99 = percentile_ms(values, 0.5), percentile_ms(values, 0.99)
        lat[peer] = (p50, p99)
        print(f"  {peer:<20} {len(values):>8,} {p50:>9.3f} {p99:>9.3f} {max(values) * 1e3:>9.3f}")

    if micro:
        print(
            f"\nworkhorse enqueue on redis://, best of {args.repeat} (interleaved): "
            f"{args.one_jobs:,} sequential calls, {n:,} in enqueue_many and from 100 tasks"
        )
        for key, label in (
            ("ping_raw", "bare PING loop, raw socket (RESP)"),
            ("ping_redis_py", "bare PING loop, redis-py"),
            ("enqueue", "queue.enqueue(name), one at a time"),
            ("enqueue_many", "queue.enqueue_many(pairs)"),
            ("aenqueue_100", "await queue.aenqueue() from 100 tasks"),
        ):
            if key in micro:
                print(f"  {label:<40} {micro[key]:>12,.0f} /s")

    if "workhorse" in rates:
        print("\nratios workhorse / peer (rates: higher is better; latency: lower is better)")
        base = rates["workhorse"]
        print(
            f"  {'peer':<12} {'enqueue one':>12} {'batch':>9} {'processed':>10} "
            f"{'incl. start':>12} {'latency p50':>12}"
        )
        for peer in PEERS:
            if peer not in rates:
                continue
            cells = []
            for k in ("one", "batch", "proc", "incl"):
                v = rates[peer].get(k)
                cells.append(f"{base[k] / v:.2f}x" if v and k in base else "-")
            p = "-"
            if peer in lat and "workhorse" in lat and lat["workhorse"][0] > 0:
                p = f"{lat['workhorse'][0] / lat[peer][0]:.2g}x"
            print(
                f"  {peer:<12} {cells[0]:>12} {cells[1]:>9} {cells[2]:>10} {cells[3]:>12} {p:>12}"
            )

    print("\ngoals (issue 8):")
    proc = rates.get("workhorse", {}).get("proc")
    print(goal_line(
        f"redis:// processed {fmt_rate(proc)} jobs/s at concurrency {args.concurrency} "
        "(goal >= 50,000)", None if proc is None else proc >= 50_000))  # fmt: skip
    if micro:
        em = micro.get("enqueue_many")
        print(goal_line(f"enqueue_many {fmt_rate(em)} jobs/s (goal >= 200,000)",
                        None if em is None else em >= 200_000))  # fmt: skip
        one, ping = micro.get("enqueue"), micro.get("ping_raw")
        if one and ping:
            print(goal_line(
                f"single enqueue {one:,.0f}/s = {one / ping:.2f}x the raw-socket PING loop "
                f"({ping:,.0f}/s) (goal >= 0.8x)", one / ping >= 0.8))  # fmt: skip
            if micro.get("enqueue_redis_us"):
                print(
                    f"      (per call {1e6 / one:.1f} us, of which redis-server ran the enqueue "
                    f"script {micro['enqueue_redis_us']:.1f} us; a PING {1e6 / ping:.1f} us)"
                )
            if micro.get("ping_redis_py"):
                print(f"      ({one / micro['ping_redis_py']:.2f}x the redis-py PING loop, "
                      f"{micro['ping_redis_py']:,.0f}/s)")  # fmt: skip
        ae = micro.get("aenqueue_100")
        print(goal_line(f"aenqueue from 100 tasks {fmt_rate(ae)}/s (goal >= 50,000)",
                        None if ae is None else ae >= 50_000))  # fmt: skip
    else:
        print(goal_line("enqueue goals", None))
    if "workhorse" in lat:
        p50, p99 = lat["workhorse"]
        print(goal_line(f"redis:// latency p50 {p50:.3f} ms (goal <= 1 ms)", p50 <= 1.0))
        print(goal_line(f"redis:// latency p99 {p99:.3f} ms (goal <= 5 ms)", p99 <= 5.0))
    else:
        print(goal_line("redis:// latency", None))
    mem = rates.get("workhorse memory://", {}).get("proc")
    print(goal_line(f"memory:// processed {fmt_rate(mem)} jobs/s (goal >= 200,000)",
                    None if mem is None else mem >= 200_000))  # fmt: skip
    print("\nsetups:")
    for peer in CONTENDERS:
        if peer in rows or peer in notes:
            print(f"  {peer:<16} {version_of(peer):<7} {SETUP[peer]}")


if __name__ == "__main__":
    if "--child" in sys.argv:
        # The child runs from this file imported by name, so rq finds the handlers as
        # bench_queue.noop_N (it refuses functions of __main__).
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        importlib.import_module("bench_queue").main()
    else:
        with contextlib.suppress(KeyboardInterrupt):
            main()
