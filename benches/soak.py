"""Soak under chaos (RELIABILITY.md section 4, row 21): a million jobs through worker processes
that are killed, connections that are cut, and a Redis that is restarted, with a ledger outside
Redis as the ground truth.

Run: make soak                      (1,000,000 jobs; a few minutes)
     .venv/bin/python benches/soak.py --jobs 100000 --workers 4 --concurrency 16

What it does, on a redis-server of its own (a free loopback port, AOF with `appendfsync always`
unless --fsync everysec, files in a temporary directory, never the machine's 6379):
1. enqueues --jobs no-op jobs (`enqueue_many`, 10,000 per call) before any fault;
2. starts --workers `workhorse worker` processes (lease L = --lease, reaper period R = --reaper,
   --concurrency each); every handler appends a start and an end record (job number, `fails`,
   phase, wall time; 15 bytes) to its own process's ledger file with O_APPEND, so a kill -9
   loses nothing it wrote;
3. while they work: every --kill-every seconds (uniform in the range) one random worker gets
   SIGKILL and is started again at once; every --client-kill-every seconds `CLIENT KILL TYPE
   normal` cuts every connection; once half the jobs are done redis-server gets kill -9 and is
   started again on its AOF;
4. once nothing is ready, running, scheduled or retrying, stops the workers (SIGTERM), reads the
   ledgers and checks:
   - every job completed at least once (an end record) and the queue holds nothing, dead included;
   - extra runs (starts beyond one per job) caused by worker kills <= kills x (concurrency +
     unapplied acks): a claim fills a free slot only (no prefetch beyond concurrency), but a slot
     is free again once its run ends, before the ack reaches Redis, so a kill loses at most
     2 x concurrency runs; re-runs whose last run was not in a killed process (the Redis
     restart, cut connections) are counted apart, bounded by restarts x workers x that;
   - recovery: from a kill to the first re-run of each job that was running in the killed
     process: p99 <= B = L + R + 2 s;
   - no keys leaked: what is left in Redis (SCAN) is only bookkeeping (stats, names, epoch, the
     pools of killed workers, wake-up lists), never job data, leases or lists.
Prints the figures and exits non-zero if a check fails.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

import workhorse as wh

NAME = "soak"
RECORD = struct.Struct("<IHBd")  # job number, fails, phase (0 start, 1 end), wall time
START, END = 0, 1

APP = textwrap.dedent(
    """
    import os, struct, time
    import workhorse as wh

    RECORD = struct.Struct("<IHBd")
    fd = os.open(os.path.join(os.environ["SOAK_LEDGER"], f"ledger-{os.getpid()}.bin"),
                 os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    work = float(os.environ.get("SOAK_JOB_MS", "0")) / 1000

    def make(concurrency):
        queue = wh.Queue.from_url(
            os.environ["SOAK_URL"], namespace=os.environ["SOAK_NS"],
            lease=float(os.environ["SOAK_LEASE"]),
            reaper_interval=float(os.environ["SOAK_REAPER"]),
        )
        worker = wh.Worker(concurrency=concurrency, queue=queue, grace=5.0)

        @worker.handler("soak", max_fails=1000, backoff=lambda job: 0.1)
        def soak(job):
            i = job.args["i"]
            os.write(fd, RECORD.pack(i, min(job.fails, 65535), 0, time.time()))
            if work:
                time.sleep(work)
            os.write(fd, RECORD.pack(i, min(job.fails, 65535), 1, time.time()))

        return worker
    """
)


# -- redis-server: the tests' own (tests/redis_server.py), with its minimal RESP client --------

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from redis_server import (  # type: ignore[import-not-found]  # noqa: E402
    REDIS_SERVER,
    RedisServer,
    RespError,
    command,
)


def resp(port: int, *args: object) -> Any:
    """One command on its own connection; the decoded reply (errors raised)."""
    return command(port, *args, timeout=10.0)


# -- the worker processes and the chaos ---------------------------------------------------------


class Workers:
    """The worker processes, each started again when it is killed (or dies)."""

    def __init__(self, args: argparse.Namespace, directory: Path, env: dict[str, str]) -> None:
        self.args, self.directory, self.env = args, directory, env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.kills: list[tuple[float, int]] = []  # (wall time, pid)
        self.deaths = 0  # exits nobody asked for (a worker that could not reach Redis)
        self.lock = threading.Lock()
        for _ in range(args.workers):
            self.procs.append(self._spawn())

    def _spawn(self) -> subprocess.Popen[bytes]:
        log = open(self.directory / "workers.log", "ab")  # noqa: SIM115 - the child keeps it
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "workhorse", "--url", self.env["SOAK_URL"],
                 "--namespace", self.env["SOAK_NS"], "worker", "soak_app:make",
                 "--concurrency", str(self.args.concurrency), "--log-level", "ERROR"],
                cwd=self.directory, env=self.env, stdout=log, stderr=log,
            )
        finally:
            log.close()

    def kill_one(self, rng: random.Random) -> None:
        with self.lock:
            k = rng.randrange(len(self.procs))
            proc = self.procs[k]
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                self.kills.append((time.time(), proc.pid))
            proc.wait(10)
            self.procs[k] = self._spawn()

    def respawn_dead(self) -> None:
        with self.lock:
            for k, proc in enumerate(self.procs):
                if proc.poll() is not None:
                    self.deaths += 1
                    self.procs[k] = self._spawn()

    def stop(self) -> None:
        with self.lock:
            for proc in self.procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in self.procs:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


def every(stop: threading.Event, period: tuple[float, float], rng: random.Random,
          action: Any) -> threading.Thread:
    def loop() -> None:
        while not stop.wait(rng.uniform(*period)):
            action()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


# -- the ledger ---------------------------------------------------------------------------------


def read_ledgers(directory: Path, n: int) -> dict[str, Any]:
    """Per job: the first start (time, process) and whether any run ended; every further start
    kept by job (runs beyond the first are rare: only those get a list)."""
    first_t = array("d", bytes(8 * n))
    first_p = array("i", bytes(4 * n))
    first_f = array("H", bytes(2 * n))  # fails at the first run: > 0 after a claim lost unrun
    ended = bytearray(n)
    more: dict[int, list[tuple[float, int]]] = {}
    starts = 0
    records = 0
    torn = 0
    for path in sorted(directory.glob("ledger-*.bin")):
        pid = int(path.stem.split("-")[1])
        data = path.read_bytes()
        usable = len(data) - len(data) % RECORD.size
        torn += len(data) != usable
        for i, fails, phase, t in RECORD.iter_unpack(data[:usable]):
            records += 1
            if phase == END:
                ended[i] = 1
                continue
            starts += 1
            if first_t[i] == 0.0:
                first_t[i], first_p[i], first_f[i] = t, pid, fails
            else:
                more.setdefault(i, []).append((t, pid))
    return {
        "first_t": first_t, "first_p": first_p, "first_f": first_f, "ended": ended,
        "more": more,
        "starts": starts, "records": records, "torn": torn,
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the run ------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--lease", type=float, default=5.0, help="L, seconds")
    parser.add_argument("--reaper", type=float, default=1.0, help="R, seconds")
    parser.add_argument("--kill-every", type=float, nargs=2, default=(2.0, 6.0),
                        metavar=("MIN", "MAX"), help="seconds between worker kills")
    parser.add_argument("--client-kill-every", type=float, default=5.0)
    parser.add_argument("--fsync", choices=["always", "everysec"], default="always")
    parser.add_argument("--job-ms", type=float, default=0.0, help="each job sleeps this long")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up after (s)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    n = args.jobs
    bound = args.lease + args.reaper + 2.0
    directory = Path(tempfile.mkdtemp(prefix="workhorse-soak-"))
    (directory / "soak_app.py").write_text(APP)
    (directory / "ledger").mkdir()
    (directory / "redis").mkdir()
    if REDIS_SERVER is None:
        sys.exit("soak: redis-server is not installed")
    redis = RedisServer(
        str(directory / "redis"), start_timeout=120.0, aof=True, appendfsync=args.fsync
    )
    ns = "soak"
    print(
        f"soak: {n:,} jobs, {args.workers} worker processes x concurrency {args.concurrency}, "
        f"L = {args.lease:g} s, R = {args.reaper:g} s, B = L + R + 2 = {bound:g} s; kill -9 of "
        f"a worker every {args.kill_every[0]:g}-{args.kill_every[1]:g} s, CLIENT KILL TYPE "
        f"normal every {args.client_kill_every:g} s, one redis-server kill -9 + restart "
        f"(appendfsync {args.fsync}) at half way; seed {seed}; {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.1f}; files in {directory}",
        flush=True,
    )
    began = time.monotonic()
    queue = wh.Queue.from_url(redis.url, namespace=ns, lease=args.lease, reaper_interval=60)
    t = time.monotonic()
    for start in range(0, n, 10_000):
        queue.enqueue_many([(NAME, {"i": i}) for i in range(start, min(n, start + 10_000))])
    enqueue_s = time.monotonic() - t
    print(f"  enqueued {n:,} in {enqueue_s:.1f} s ({n / enqueue_s:,.0f}/s)", flush=True)

    env = {
        **os.environ,
        "SOAK_URL": redis.url, "SOAK_NS": ns, "SOAK_LEDGER": str(directory / "ledger"),
        "SOAK_LEASE": str(args.lease), "SOAK_REAPER": str(args.reaper),
        "SOAK_JOB_MS": str(args.job_ms), "PYTHONPATH": str(directory),
    }
    stop = threading.Event()
    workers = Workers(args, directory, env)
    work_began = time.monotonic()
    cut = [0, 0]  # CLIENT KILL rounds, connections cut

    def client_kill() -> None:
        try:
            cut[1] += int(resp(redis.port, "CLIENT", "KILL", "TYPE", "normal"))
            cut[0] += 1
        except (OSError, RespError):
            pass  # Redis is restarting

    every(stop, tuple(args.kill_every), rng, lambda: workers.kill_one(rng))
    every(stop, (args.client_kill_every, args.client_kill_every), rng, client_kill)

    restart: dict[str, float] = {}
    history: list[tuple[float, int]] = []  # (monotonic, processed) at each look
    outcome = "done"
    idle_polls = 0
    last_print = 0.0
    while True:
        time.sleep(0.5)
        workers.respawn_dead()
        elapsed = time.monotonic() - began
        if elapsed > args.timeout:
            outcome = "TIMEOUT"
            break
        try:
            infos = queue.client.queues()
            stats = queue.client.stats()
        except wh.QueueError:
            continue  # a cut connection or the restart: look again
        left = sum(q.ready + q.running + q.scheduled + q.retry for q in infos)
        history.append((time.monotonic(), stats["processed"]))
        if not restart and stats["processed"] >= n // 2:
            at = time.monotonic()
            redis.kill()
            restart["at"] = at - work_began
            restart["down"] = redis.start(timeout=120.0)
            # everysec may lose the last second or two of writes: the acks of up to this many
            # jobs (those processed in the 2 s before the kill) may come undone.
            earlier = [p for t, p in history if t <= at - 2.0]
            restart["recent"] = stats["processed"] - (earlier[-1] if earlier else 0)
            print(
                f"  {at - work_began:6.1f} s: redis-server killed (kill -9) with "
                f"{stats['processed']:,} processed; back with its AOF loaded after "
                f"{restart['down']:.2f} s",
                flush=True,
            )
            continue
        if time.monotonic() - last_print >= 10:
            last_print = time.monotonic()
            print(
                f"  {time.monotonic() - work_began:6.1f} s: processed {stats['processed']:,}, "
                f"left {left:,}, kills {len(workers.kills)}, connections cut {cut[1]}, "
                f"load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
        idle_polls = idle_polls + 1 if left == 0 and restart else 0
        if idle_polls >= 2:
            break
    work_s = time.monotonic() - work_began
    stop.set()
    time.sleep(0.1)
    with workers.lock:
        pass  # a kill in progress has finished
    workers.stop()
    final = queue.client.queues()
    stats = queue.client.stats()

    # -- what the ledger says ----------------------------------------------------------------
    ledger = read_ledgers(directory / "ledger", n)
    ended = ledger["ended"]
    missing = n - sum(ended)
    extra = ledger["starts"] - sum(1 for x in ledger["first_t"] if x)
    kill_at = dict((pid, t) for t, pid in workers.kills)
    from_kills: list[float] = []  # recovery times
    other_reruns = 0
    causes = Counter[str]()
    per_kill = Counter[int]()  # re-runs by killed process
    for i, later in ledger["more"].items():
        runs = sorted([(ledger["first_t"][i], ledger["first_p"][i]), *later])
        for (t_prev, pid_prev), (t_next, _pid) in zip(runs, runs[1:], strict=False):
            killed = kill_at.get(pid_prev)
            if killed is not None and t_prev <= killed <= t_next:
                from_kills.append(t_next - killed)
                causes["kill"] += 1
                per_kill[pid_prev] += 1
            else:
                other_reruns += 1
                causes["other"] += 1
    kills = len(workers.kills)
    left = sum(q.ready + q.running + q.scheduled + q.retry + q.dead for q in final)

    # -- what is left in Redis ------------------------------------------------------------------
    keys: list[tuple[str, str, int, int]] = []
    cursor = b"0"
    while True:
        cursor, batch = resp(redis.port, "SCAN", cursor, "COUNT", 1000)
        for key in batch:
            name = key.decode()
            kind = resp(redis.port, "TYPE", name)
            size = {
                "hash": "HLEN", "list": "LLEN", "set": "SCARD", "zset": "ZCARD",
            }.get(kind)
            ttl = resp(redis.port, "TTL", name)
            keys.append((name, kind, resp(redis.port, size, name) if size else 1, ttl))
        if cursor == b"0":
            break
    dbsize = resp(redis.port, "DBSIZE")
    bookkeeping = ("stats", "names", "epoch", "pools", "waiters")
    # Short-lived markers that expire by themselves: wake-up lists, the claims of recent
    # fetches (kept for a lease) and the answers of recent enqueue calls (2 command timeouts +
    # 10 s), each for the same call sent again after a lost reply. A key that vanished between
    # SCAN and TYPE is "none".
    expiring = ("wake:", "fetch:", "enq:")

    def transient(key: tuple[str, str, int, int]) -> bool:
        rest = key[0].split(":", 1)[1]
        gone = key[1] == "none" or key[3] == -2  # expired between SCAN and TYPE or TTL
        return gone or (rest.startswith(expiring) and 0 <= key[3] <= 120)

    leaked = [k for k in keys if not (k[0].split(":", 1)[1] in bookkeeping or transient(k))]
    redis.kill()

    # -- report -------------------------------------------------------------------------------
    p50, p99 = percentile(from_kills, 0.50), percentile(from_kills, 0.99)
    worst = max(from_kills, default=float("nan"))
    # A kill loses the runs it held: at most `concurrency` running (a claim fills a free slot
    # only: no prefetch beyond it), plus runs that ended but whose acks had not reached Redis (a
    # slot is free again once its run ends, before its ack is flushed): at most as many again.
    held = 2 * args.concurrency
    worst_kill = max(per_kill.values(), default=0)
    restarts = 1 if restart else 0
    # The restart: runs held when Redis went away may be reaped before their acks get through;
    # with everysec, also the jobs acked in the last 2 s before the kill (their acks undone).
    other_bound = restarts * args.workers * held
    other_bound_text = "restarts x workers x (concurrency + unapplied acks)"
    if args.fsync == "everysec":
        other_bound += restarts * int(restart.get("recent", 0) + args.workers * held)
        other_bound_text += " + the jobs acked in the 2 s before the kill, and as many again"
    print(
        f"  {outcome} after {work_s:.1f} s of work ({n / work_s:,.0f} jobs/s through the chaos); "
        f"run took {time.monotonic() - began:.1f} s; load {os.getloadavg()[0]:.1f}"
    )
    print(
        f"  faults: {kills} worker kills (kill -9), {workers.deaths} other worker exits, "
        f"{cut[0]} CLIENT KILL rounds cutting {cut[1]} connections, {restarts} redis-server "
        f"kill -9 + restart at {restart.get('at', 0):.1f} s (down {restart.get('down', 0):.2f} s "
        f"until its AOF was loaded)"
    )
    print(
        f"  ledger: {ledger['records']:,} records, {ledger['starts']:,} runs started, "
        f"{ledger['torn']} torn tails; stats: {stats}"
    )
    print(
        f"  extra runs: {extra:,} ({causes['kill']:,} after a worker kill, at most {worst_kill} "
        f"for one kill; {causes['other']:,} otherwise: the restart, cut connections)"
    )
    unrun = sum(1 for f in ledger["first_f"] if f)
    print(
        f"  jobs whose first run came after a reap (claimed, never started: a cut connection "
        f"lost the claim's reply, or a kill came between claim and start): {unrun:,}"
    )
    print(
        f"  recovery (kill -> the orphan's re-run start), {len(from_kills)} orphans: p50 "
        f"{p50:.2f} s, p99 {p99:.2f} s, max {worst:.2f} s; B = {bound:g} s"
    )
    print(f"  Redis at the end: DBSIZE {dbsize}; keys left:")
    wakes = [k for k in keys if k[0].split(":", 1)[1].startswith("wake:")]
    fetches = [k for k in keys if k[0].split(":", 1)[1].startswith("fetch:") and k[3] >= 0]
    enqs = [k for k in keys if k[0].split(":", 1)[1].startswith("enq:") and k[3] >= 0]
    for name, kind, count, ttl in sorted(keys):
        if name.split(":", 1)[1].startswith(expiring) or kind == "none":
            continue
        print(f"    {name} ({kind}, {count}{'' if ttl < 0 else f', expires in {ttl} s'})")
    if fetches:
        ttls = [k[3] for k in fetches]
        print(
            f"    {{{ns}}}:fetch:<request> x {len(fetches)} (recent fetches' claims, kept for a "
            f"lease for a fetch sent again; expiring in {min(ttls)}-{max(ttls)} s)"
        )
    if enqs:
        ttls = [k[3] for k in enqs]
        print(
            f"    {{{ns}}}:enq:<request> x {len(enqs)} (recent enqueue calls' answers, for a call "
            f"sent again; expiring in {min(ttls)}-{max(ttls)} s)"
        )
    if wakes:
        ttls = [k[3] for k in wakes]
        print(
            f"    {{{ns}}}:wake:<consumer> x {len(wakes)} (lists of one wake-up token, expiring "
            f"in {min(ttls)}-{max(ttls)} s; waiters older than 60 s are dropped at the next "
            f"wake-up, pools entries older than 60 s at the next worker_pools())"
        )
    checks = [
        ("finished", outcome == "done"),
        (f"every job completed at least once ({missing:,} missing)", missing == 0),
        (f"nothing left in the queue ({left} ready/running/scheduled/retry/dead)", left == 0),
        (
            f"extra runs after kills {causes['kill']:,} <= kills x (concurrency + unapplied "
            f"acks) = {kills} x {held} = {kills * held:,} (each kill <= {held}: {worst_kill})",
            causes["kill"] <= kills * held and worst_kill <= held,
        ),
        (
            f"other extra runs {causes['other']:,} <= {other_bound_text} = {other_bound:,}",
            causes["other"] <= other_bound,
        ),
        (f"p99 recovery {p99:.2f} s <= B = {bound:g} s", not from_kills or p99 <= bound),
        (f"no data lost (data_losses {stats['data_losses']})", stats["data_losses"] == 0),
        (f"no keys leaked ({len(leaked)} beyond bookkeeping)", not leaked),
    ]
    failed = 0
    for text, ok in checks:
        failed += not ok
        print(f"  {'ok    ' if ok else 'FAILED'} {text}")
    if failed or args.keep:
        print(f"  files kept in {directory} (workers.log, ledger/, redis/)")
    else:
        shutil.rmtree(directory, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
