"""The queue against a model (RELIABILITY.md section 4, row 22): a hypothesis state machine.

Rules: enqueue (plain, many, scheduled, unique), claim (a real Worker takes one job and holds it),
finish (the held run completes, raises, asks for a retry, dies, reschedules, or is released at
stop), drain (a worker runs everything ready), advance time (real sleeps: delays are 0.2 s, 0.6 s
or an hour), delete, retry-dead, pause and unpause through the client, and on Redis: crash (a
worker process claims a job and is killed with SIGKILL; its lease runs out and the reaper takes
it) and restart (redis-server kill -9, started again on its `appendfsync always` AOF).

After every step the client API is compared with the model: `queues()` counts, the scheduled,
retry and dead pages (ids, `fails`, due times), `busy_workers()` and `stats()`. Invariants: no job
lost (every enqueued id is in exactly one of ready / scheduled / retry / running / dead / done),
each job in one state, `fails` and the fencing token (the attempt) never go down (retry_dead_job
resets `fails` by design), a unique key is held exactly while its job waits unclaimed, and a
claimed job is the one the model says comes next (FIFO; a released or reaped run goes to the
front; due jobs are promoted in due order; paused names are not claimed).

Time is real: where a due time falls inside the window of the call that may promote it, the
model accepts either outcome and learns which from the pages. Runs are derandomized (the same
examples every run) and do not shrink; `MODEL_EXAMPLES`, `MODEL_STEPS`, `MODEL_RANDOM=1` (a new
seed each run, printed on failure; `pytest --hypothesis-seed=N` replays one), `MODEL_SHRINK=1`
and `MODEL_TIMEOUT` (seconds per test) change that.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)
from redis_server import RedisServer

import workhorse as wh

NAMES = ("a", "b")
MAX_FAILS = 3
# In-process holders renew every HOLD_LEASE / 3 and give up after 0.6 HOLD_LEASE without an
# answer: far beyond a Redis restart or a loaded machine's stall, so no live hold is ever lost.
HOLD_LEASE = 15.0
# The worker process that is killed: its lease is what a crash waits out.
CRASH_LEASE = 1.0
# Due soon (a step or two), or never within a run.
DELAYS = (0.2, 0.6, 3600.0)
RETRY_DELAYS = (0.0, 0.2, 0.6, 3600.0)
# Redis TIME and time.time() read the same clock; this covers the float formatting of times.
EPS = 0.01
WAIT = 15.0  # a claim or a drain a loaded machine still finishes within this
MAX_HOLDERS = 4
MAX_CRASHES = 2  # per example: each waits a lease out
MAX_RESTARTS = 2

STEPS = int(os.environ.get("MODEL_STEPS", "30"))


def model_settings(examples: int) -> settings:
    """Derandomized (the same examples every run, so CI is stable) and without shrinking (a
    real-time run does not replay exactly; the failing steps are printed as they ran)."""
    return settings(
        deadline=None,
        max_examples=int(os.environ.get("MODEL_EXAMPLES", examples)),
        stateful_step_count=STEPS,
        derandomize=os.environ.get("MODEL_RANDOM") != "1",
        database=None,
        print_blob=True,
        phases=(
            [Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink]
            if os.environ.get("MODEL_SHRINK") == "1"
            else [Phase.explicit, Phase.reuse, Phase.generate]
        ),
        suppress_health_check=list(HealthCheck),
    )


pytestmark = pytest.mark.timeout(int(os.environ.get("MODEL_TIMEOUT", "300")))


@dataclasses.dataclass
class MJob:
    """A job as the model knows it."""

    id: str
    name: str
    state: str  # ready, scheduled, retry, running, dead, done
    fails: int = 0
    attempts: int = 0  # claims so far: the fencing token of the last one
    attempts_exact: bool = True  # False once a claim may have been released unseen
    due: tuple[float, float] = (0.0, 0.0)  # scheduled, retry: earliest and latest due time
    unique: str | None = None


TIMED = ("scheduled", "retry")


def promote_key(job: MJob) -> tuple[int, float, str]:
    # Both backends promote the scheduled set, then the retry set, each in due order.
    return (TIMED.index(job.state), job.due[0], job.id)


class Holder:
    """A Worker of concurrency 1 that claims one job and holds it until told how the run ends.

    It stops claiming (its dispatcher closes) before the run ends, so it never takes a second
    job; `release` ends the run by stopping past the grace, which releases it unattempted."""

    def __init__(self, queue: wh.Queue) -> None:
        self.claimed = threading.Event()
        self._go = threading.Event()
        self._end: tuple[str, float] = ("complete", 0.0)
        self.job: tuple[str, str, int, int] | None = None  # id, name, fails, token
        self.worker = wh.Worker(concurrency=1, queue=queue, grace=60.0)
        for name in NAMES:
            self.worker.handler(name, max_fails=MAX_FAILS, backoff=self._backoff)(self._run)

    def _backoff(self, job: Any) -> float:
        return self._end[1]

    def _run(self, job: Any) -> wh.Result | None:
        self.job = (job.id, job.name, job.fails, job._token)
        self.claimed.set()
        self._go.wait(300)
        kind, delay = self._end
        if kind == "raise":
            raise RuntimeError("the model's handler failed")
        if kind == "retry":
            return wh.Result.retry(after=delay)
        if kind == "dead":
            return wh.Result.dead("the model's handler gave up")
        if kind == "reschedule":
            return wh.Result.reschedule(after=delay)
        if kind == "release":
            job.ctx.wait_cancelled(60)
        return None

    def claim(self) -> bool:
        self.worker.start()
        return self.claimed.wait(WAIT)

    def finish(self, kind: str, delay: float) -> None:
        self._end = (kind, delay)
        core = self.worker._core
        if kind == "release":
            self._go.set()
            self.worker.stop(timeout=0.05)  # the grace is over at once: cancelled, released
            assert core.wait_idle(WAIT), "the released run's worker did not stop"
            return
        stopper = threading.Thread(target=self.worker.stop, kwargs={"timeout": WAIT})
        stopper.start()
        deadline = time.monotonic() + WAIT
        while not core.closed:
            assert time.monotonic() < deadline, "the holder's worker did not begin to stop"
            time.sleep(0.001)
        self._go.set()
        stopper.join(WAIT + 5)
        assert not stopper.is_alive() and core.wait_idle(WAIT), "the holder did not stop"

    def abandon(self) -> None:
        self._end = ("release", 0.0)
        self._go.set()
        self.worker.stop(timeout=0.05)
        self.worker._core.wait_idle(5)


# The worker process a crash kills: started ahead (imports take a while on a busy machine), it
# opens the queue when told which namespace, claims one job, prints it, and hangs.
DOOMED = textwrap.dedent(
    f"""
    import json, sys, time
    import workhorse as wh

    url = sys.argv[1]
    namespace = sys.stdin.readline().strip()
    if not namespace:
        sys.exit(0)
    queue = wh.Queue.from_url(url, namespace=namespace, lease={CRASH_LEASE},
                              reaper_interval=3600)
    worker = wh.Worker(concurrency=1, queue=queue, grace=60)

    def run(job):
        print(json.dumps([job.id, job.name, job.fails, job._token]), flush=True)
        time.sleep(600)

    for name in {NAMES!r}:
        worker.handler(name, max_fails={MAX_FAILS})(run)
    worker.start()
    time.sleep(600)
    """
)


class Doomed:
    """A spare worker process for the next crash, started ahead."""

    def __init__(self, directory: Path, url: str) -> None:
        script = directory / "doomed.py"
        if not script.exists():
            script.write_text(DOOMED)
        self.proc = subprocess.Popen(
            [sys.executable, str(script), url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def claim(self, namespace: str) -> tuple[str, str, int, int] | None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(namespace + "\n")
        self.proc.stdin.flush()
        result: list[Any] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()))
        reader.daemon = True
        reader.start()
        reader.join(WAIT + 10)  # it imported already; this is a connect and a claim
        if not result or not result[0]:
            return None
        job_id, name, fails, token = json.loads(result[0])
        return str(job_id), str(name), int(fails), int(token)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


_namespaces = itertools.count(1)
# What the runs did, printed at the end: a model that skips its rules proves little.
TALLY = collections.Counter[str]()


class QueueModel(RuleBasedStateMachine):
    """The queue's model; subclasses say which backend (Redis adds crash and restart)."""

    url: str
    redis: RedisServer | None = None
    directory: Path

    def __init__(self) -> None:
        super().__init__()
        tag = f"model{os.getpid()}x{next(_namespaces)}"
        self.namespace = tag
        url = self.url if self.redis is not None else f"memory://{tag}"
        self.queue = wh.Queue.from_url(url, namespace=tag, lease=HOLD_LEASE, reaper_interval=60)
        # Holders' consumers reap too (any live process does), every second.
        self.hold_queue = wh.Queue.from_url(
            url, namespace=tag, lease=HOLD_LEASE, reaper_interval=1.0
        )
        self.jobs: dict[str, MJob] = {}
        self.ready: dict[str, collections.deque[str]] = {n: collections.deque() for n in NAMES}
        # False when the backend's ready order cannot be known (a due time inside a window
        # where two calls may each have promoted it); True again once nothing is ready.
        self.order_known = True
        self.unique_held: dict[str, str] = {}
        self.paused: set[str] = set()
        # Keys whose job may have been claimed (and released) unseen: the next enqueue tells.
        self.unique_unknown: set[str] = set()
        self.stats = collections.Counter[str]()
        self.holders: list[Holder] = []
        # Calls since the last check that may have promoted due jobs: (start, end) wall times.
        self.windows: list[tuple[float, float]] = []
        self.crashes = 0
        self.restarts = 0
        self.seq = 0

    def teardown(self) -> None:
        for holder in self.holders:
            holder.abandon()
        self.holders.clear()

    # -- helpers ------------------------------------------------------------------------------

    def _args(self) -> dict[str, int]:
        self.seq += 1
        return {"n": self.seq}

    def _add(self, job: wh.QueuedJob, unique: str | None = None) -> MJob:
        assert job.id not in self.jobs, f"enqueue returned an id twice: {job.id}"
        assert job.fails == 0
        if job.run_at > job.enqueued_at:
            m = MJob(job.id, job.name, "scheduled", due=(job.run_at, job.run_at), unique=unique)
        else:
            m = MJob(job.id, job.name, "ready", unique=unique)
            self.ready[job.name].append(job.id)
        self.jobs[job.id] = m
        TALLY["enqueued"] += 1
        return m

    def _in_state(self, state: str) -> list[MJob]:
        return sorted((j for j in self.jobs.values() if j.state == state), key=lambda j: j.id)

    def _certainly_claimable(self) -> bool:
        cutoff = time.time() - EPS
        return any(q for n, q in self.ready.items() if n not in self.paused) or any(
            j.state in TIMED and j.due[1] < cutoff and j.name not in self.paused
            for j in self.jobs.values()
        )

    def _candidates(self, t0: float, t1: float) -> set[str]:
        """The jobs a claim made between t0 and t1 may take: per name not paused, the head of
        its ready list, or (none ready) the first of those promoted by then, in promote order."""
        out: set[str] = set()
        for name in NAMES:
            if name in self.paused:
                continue
            ready = self.ready[name]
            if ready:
                out |= {ready[0]} if self.order_known else set(ready)
                continue
            timed = [
                j for j in self.jobs.values()
                if j.state in TIMED and j.name == name and j.due[0] <= t1 + EPS
            ]
            if not self.order_known or any(j.due[0] != j.due[1] for j in timed):
                out |= {j.id for j in timed}
                continue
            for t in [t0 - EPS] + [j.due[0] for j in timed if j.due[0] > t0 - EPS]:
                due = [j for j in timed if j.due[0] <= t]
                if due:
                    out.add(min(due, key=promote_key).id)
        return out

    def _claimed(self, claim: tuple[str, str, int, int], t0: float, t1: float) -> MJob:
        """Check a claim against the model and apply it."""
        job_id, name, fails, token = claim
        self.windows.append((t0, t1))
        candidates = self._candidates(t0, t1)
        assert job_id in candidates, (
            f"claimed {job_id} ({self.jobs.get(job_id)}), expected one of {candidates}"
        )
        job = self.jobs[job_id]
        assert name == job.name
        assert fails == job.fails, f"claimed {job_id} with fails {fails}, model {job.fails}"
        assert token > job.attempts, f"the token went from {job.attempts} to {token}"
        if job.attempts_exact:
            assert token == job.attempts + 1, f"token {token} after {job.attempts} claims"
        job.attempts = token
        job.attempts_exact = True
        if job.state == "ready":
            self.ready[name].remove(job_id)
        job.state = "running"
        if job.unique is not None and self.unique_held.get(job.unique) == job_id:
            del self.unique_held[job.unique]  # unique while waiting: released at claim
            self.unique_unknown.discard(job.unique)
        return job

    def _fail(self, job: MJob, delay: float, t0: float, t1: float) -> None:
        self.stats["processed"] += 1
        self.stats["failed"] += 1
        job.fails += 1
        if job.fails >= MAX_FAILS:
            self.stats["dead"] += 1
            job.state = "dead"
        else:
            job.state = "retry"
            job.due = (t0 + delay, t1 + delay)

    # -- enqueue ------------------------------------------------------------------------------

    def enqueue(self, data: st.DataObject) -> None:
        kind = data.draw(st.sampled_from(["plain", "many", "scheduled", "unique"]), "kind")
        if kind == "many":
            names = data.draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3), "names")
        else:
            names = [data.draw(st.sampled_from(NAMES), "name")]
        name = names[0]
        if kind == "plain":
            self._add(self.queue.enqueue(name, self._args()))
        elif kind == "many":
            jobs = self.queue.enqueue_many([(n, self._args()) for n in names])
            assert [j.name for j in jobs] == names
            for job in jobs:
                self._add(job)
        elif kind == "scheduled":
            delay = data.draw(st.sampled_from(DELAYS), "delay")
            job = self.queue.enqueue_in(name, delay, self._args())
            assert abs(job.run_at - job.enqueued_at - delay) < EPS
            self._add(job)
        else:
            key = data.draw(st.integers(0, 2), "key")
            delay = data.draw(st.sampled_from((0.0, *DELAYS)), "delay")
            self._enqueue_unique(name, key, delay)

    def _enqueue_unique(self, name: str, key: int, delay: float) -> None:
        unique = f"{name}:{key}"
        args = {"u": key}
        job = (
            self.queue.enqueue_unique_in(name, delay, args)
            if delay
            else self.queue.enqueue_unique(name, args)
        )
        holder = self.unique_held.get(unique)
        if unique in self.unique_unknown:
            self.unique_unknown.discard(unique)
            if job is not None:  # its job had been claimed: the key was free
                assert holder is not None
                del self.unique_held[unique]
                holder = None
        if holder is not None:
            assert job is None, (
                f"enqueue_unique({unique}) was accepted while {self.jobs[holder]} waits"
            )
            TALLY["unique refused"] += 1
            return
        assert job is not None, f"enqueue_unique({unique}) was refused with no job waiting"
        self._add(job, unique)
        self.unique_held[unique] = job.id

    # -- claims and runs ----------------------------------------------------------------------

    def claim(self, data: st.DataObject) -> None:
        if len(self.holders) >= MAX_HOLDERS or not self._certainly_claimable():
            TALLY["claim skipped"] += 1
            return
        TALLY["claim"] += 1
        holder = Holder(self.hold_queue)
        t0 = time.time()
        claimed = holder.claim()
        t1 = time.time()
        if not claimed:
            holder.abandon()
            raise AssertionError(f"nothing was claimed within {WAIT} s, model: {self._ready()}")
        assert holder.job is not None
        self._claimed(holder.job, t0, t1)
        self.holders.append(holder)

    def finish(self, data: st.DataObject) -> None:
        """A held run ends (with none held, a job is claimed first)."""
        which = data.draw(st.integers(0, MAX_HOLDERS - 1), "holder")
        kind = data.draw(
            st.sampled_from(["complete", "raise", "retry", "dead", "reschedule", "release"]),
            "outcome",
        )
        delay = data.draw(st.sampled_from(RETRY_DELAYS), "delay")
        if not self.holders:
            self.claim(data)
        if not self.holders:
            return
        holder = self.holders.pop(which % len(self.holders))
        TALLY[f"finish {kind}"] += 1
        assert holder.job is not None
        job = self.jobs[holder.job[0]]
        t0 = time.time()
        holder.finish(kind, delay)
        t1 = time.time()
        if kind == "complete":
            self.stats["processed"] += 1
            job.state = "done"
        elif kind in ("raise", "retry"):
            self._fail(job, delay, t0, t1)
        elif kind == "dead":
            self.stats["processed"] += 1
            self.stats["dead"] += 1
            job.state = "dead"
        elif kind == "reschedule":
            self.stats["processed"] += 1
            job.state = "scheduled"
            job.due = (t0 + delay, t1 + delay)
        else:  # released: back to the front of its list, the attempt not counted
            job.state = "ready"
            self.ready[job.name].appendleft(job.id)

    def drain(self, data: st.DataObject) -> None:
        """A worker runs everything ready (and what falls due meanwhile), then stops."""
        runs: list[tuple[str, str, int, int]] = []
        lock = threading.Lock()
        worker = wh.Worker(concurrency=2, queue=self.hold_queue, grace=60.0)

        def run(job: Any) -> None:
            with lock:
                runs.append((job.id, job.name, job.fails, job._token))

        for name in NAMES:
            worker.handler(name, max_fails=MAX_FAILS)(run)
        expected = {i for n, q in self.ready.items() if n not in self.paused for i in q}
        t0 = time.time()
        worker.start()
        try:
            deadline = time.monotonic() + WAIT
            while True:
                with lock:
                    ran = {r[0] for r in runs}
                if expected <= ran and worker._core.in_flight == 0:
                    infos = self.queue.client.queues()
                    if sum(q.ready for q in infos if q.name not in self.paused) == 0:
                        break
                assert time.monotonic() < deadline, (
                    f"drain: {len(expected - ran)} ready jobs never ran: {expected - ran}"
                )
                time.sleep(0.005)
        finally:
            assert worker.stop(WAIT)
        t1 = time.time()
        self.windows.append((t0, t1))
        ids = [r[0] for r in runs]
        TALLY["drain"] += 1
        TALLY["drained jobs"] += len(ids)
        assert len(ids) == len(set(ids)), f"drain ran a job twice: {ids}"
        for job_id, name, fails, token in runs:
            job = self.jobs.get(job_id)
            assert job is not None, f"drain ran {job_id}, which was never enqueued"
            assert job.state == "ready" or (job.state in TIMED and job.due[0] <= t1 + EPS), (
                f"drain ran {job}, which was not due"
            )
            assert name not in self.paused, f"drain ran {job}, whose name is paused"
            assert fails == job.fails and name == job.name
            assert token > job.attempts
            if job.state == "ready":
                self.ready[name].remove(job_id)
            if job.unique is not None and self.unique_held.get(job.unique) == job_id:
                del self.unique_held[job.unique]
                self.unique_unknown.discard(job.unique)
            job.attempts = token
            job.state = "done"
            self.stats["processed"] += 1
        assert not any(q for n, q in self.ready.items() if n not in self.paused), (
            f"still ready after the drain: {self._ready()}"
        )
        # A job falling due at the stop may have been claimed and released unseen (to the
        # front of its list, its attempt counter one up).
        for job in self.jobs.values():
            if job.state in TIMED and job.due[0] <= t1 + EPS:
                job.attempts_exact = False
                self.order_known = False
                if job.unique is not None and self.unique_held.get(job.unique) == job.id:
                    self.unique_unknown.add(job.unique)  # a claim releases it

    def advance(self, data: st.DataObject) -> None:
        seconds: float | str = data.draw(st.sampled_from([0.05, 0.25, "next due"]), "seconds")
        if seconds == "next due":
            dues = [j.due[1] for j in self.jobs.values() if j.state in TIMED]
            wait = min(dues, default=0.0) - time.time() + 2 * EPS
            seconds = wait if 0 < wait < 1.0 else 0.0
        assert isinstance(seconds, float)
        TALLY["advance"] += 1
        time.sleep(seconds)

    # -- the client's repairs -----------------------------------------------------------------

    def repair(self, data: st.DataObject) -> None:
        """The client deletes a waiting or dead job, or gives a dead one another chance."""
        kind = data.draw(
            st.sampled_from(["delete scheduled", "delete retry", "delete dead", "retry dead"]),
            "repair",
        )
        index = data.draw(st.integers(0, 50), "index")
        which = kind.split()[1]
        jobs = self._in_state(which)
        if not jobs:
            return
        job = jobs[index % len(jobs)]
        TALLY[kind] += 1
        client = self.queue.client
        if kind == "retry dead":
            assert client.retry_dead_job(job.id)
            job.state = "ready"
            job.fails = 0  # by design: a dead job given another chance starts over
            self.ready[job.name].append(job.id)
            return
        delete = {
            "scheduled": client.delete_scheduled_job,
            "retry": client.delete_retry_job,
            "dead": client.delete_dead_job,
        }[which]
        assert delete(job.id), f"delete of {job} found nothing"
        job.state = "done"
        if job.unique is not None and self.unique_held.get(job.unique) == job.id:
            del self.unique_held[job.unique]
            self.unique_unknown.discard(job.unique)

    def pause(self, data: st.DataObject) -> None:
        """The client pauses a name (no claims of it anywhere), or unpauses it."""
        name = data.draw(st.sampled_from(NAMES), "name")
        if name in self.paused:
            self.queue.client.unpause(name)
            self.paused.discard(name)
        else:
            self.queue.client.pause(name)
            self.paused.add(name)
        TALLY["pause or unpause"] += 1

    # -- the check after every step ---------------------------------------------------------

    def _ready(self) -> dict[str, list[str]]:
        return {n: list(q) for n, q in self.ready.items()}

    def _pages(self, read: Callable[[int], wh.Page]) -> dict[str, wh.QueuedJob]:
        jobs: dict[str, wh.QueuedJob] = {}
        for page in itertools.count(1):
            got = read(page)
            for job in got.jobs:
                assert job.id not in jobs, f"{job.id} is listed twice"
                jobs[job.id] = job
            if not got.jobs or len(jobs) >= got.total:
                assert len(jobs) == got.total, (len(jobs), got.total)
                return jobs
        raise AssertionError("unreachable")

    def _promotions(
        self, pages: dict[str, dict[str, wh.QueuedJob]], windows: list[tuple[float, float]]
    ) -> None:
        """Timed jobs no longer in their page were promoted by one of the calls in `windows`:
        onto the back of their ready list, in promote order per call."""
        promoted: dict[str, list[tuple[int, MJob]]] = {n: [] for n in NAMES}
        ambiguous: set[str] = set()
        for job in self.jobs.values():
            if job.state not in TIMED:
                continue
            lo, hi = job.due
            seen = pages[job.state].get(job.id)
            if seen is not None:
                assert lo - EPS <= seen.run_at <= hi + EPS, (job, seen.run_at)
                assert seen.run_at > windows[-1][0] - EPS, (
                    f"{job} was due at {seen.run_at} but queues() at {windows[-1][0]} did "
                    "not promote it"
                )
                job.due = (seen.run_at, seen.run_at)
                continue
            assert lo <= windows[-1][1] + EPS, f"{job} was promoted before it was due"
            calls = [
                k for k, (a, b) in enumerate(windows)
                if lo <= b + EPS and (k == 0 or hi > windows[k - 1][0] - EPS)
            ]
            assert calls, f"{job} left its set, but no call could have promoted it"
            if len(calls) > 1:
                ambiguous.add(job.name)
            TALLY["promoted"] += 1
            promoted[job.name].append((calls[0], job))
        for name, moved in promoted.items():
            moved.sort(key=lambda cj: (cj[0], *promote_key(cj[1])))
            if name in ambiguous and len(moved) > 1:
                self.order_known = False
            by_call = collections.defaultdict(list)
            for call, job in moved:
                by_call[call].append(job)
            for group in by_call.values():
                for a, b in zip(group, group[1:], strict=False):
                    # Two due times known only within overlapping windows: their order is not.
                    if a.state == b.state and (a.due[0] != a.due[1] or b.due[0] != b.due[1]):
                        if a.due[1] >= b.due[0]:
                            self.order_known = False
            for _call, job in moved:
                job.state = "ready"
                self.ready[name].append(job.id)

    @invariant()
    def agrees_with_the_backend(self) -> None:
        client = self.queue.client
        t0 = time.time()
        infos = {q.name: q for q in client.queues()}
        t1 = time.time()
        pages = {
            "scheduled": self._pages(client.scheduled_jobs),
            "retry": self._pages(client.retry_jobs),
            "dead": self._pages(client.dead_jobs),
        }
        busy = client.busy_workers()
        stats = client.stats()
        self._promotions(pages, [*self.windows, (t0, t1)])
        self.windows.clear()
        TALLY["checks"] += 1
        TALLY["checks with the order unknown"] += not self.order_known
        if not any(self.ready.values()):
            self.order_known = True

        # Each job in exactly one state: the listed sets are disjoint and are the model's.
        running = [b.job_id for b in busy]
        assert len(running) == len(set(running)), f"a job runs twice: {running}"
        listed = [*pages["scheduled"], *pages["retry"], *pages["dead"], *running]
        assert len(listed) == len(set(listed)), "a job is listed in two states"
        for state, seen in [*pages.items(), ("running", set(running))]:
            model = {j.id for j in self.jobs.values() if j.state == state}
            assert set(seen) == model, (
                f"{state}: backend only {set(seen) - model}, model only {model - set(seen)}"
            )
        for state, page in pages.items():
            for job_id, seen_job in page.items():
                job = self.jobs[job_id]
                assert seen_job.fails == job.fails, (
                    f"{state} {job_id}: fails {seen_job.fails}, model {job.fails}"
                )
                if state == "dead":
                    assert seen_job.reason and seen_job.died_at, seen_job
        # No job lost: the counts per name add up to every job not done.
        for name in set(NAMES) | set(infos):
            info = infos.get(name)
            got = (
                (0, 0, 0, 0, 0)
                if info is None
                else (info.ready, info.scheduled, info.retry, info.running, info.dead)
            )
            want = tuple(
                sum(1 for j in self.jobs.values() if j.name == name and j.state == s)
                for s in ("ready", "scheduled", "retry", "running", "dead")
            )
            assert got == want, f"{name}: backend (ready, sched, retry, run, dead) {got}, {want}"
            assert want[0] == len(self.ready.get(name, ())), self._ready()
            assert (info is not None and info.paused) == (name in self.paused), (name, info)
        alive = sum(1 for j in self.jobs.values() if j.state != "done")
        assert alive == sum(
            q.ready + q.scheduled + q.retry + q.running + q.dead for q in infos.values()
        )
        # Unique while waiting: a key is held by a job that waits and was never claimed.
        for key, job_id in self.unique_held.items():
            job = self.jobs[job_id]
            assert job.unique == key and job.state in ("ready", "scheduled"), job
            assert job.attempts == 0, job
        want_stats = {
            "processed": self.stats["processed"],
            "failed": self.stats["failed"],
            "dead": self.stats["dead"],
            "stale_acks": 0,
            "reaped": self.stats["reaped"],
            "data_losses": 0,
        }
        assert stats == want_stats, f"stats {stats}, model {want_stats}"


# Actions by weight: one rule that picks among them keeps the mix steady with few examples
# (hypothesis's rule choice with a dozen rules and a dozen examples leaves whole rules out).
ACTIONS = ("enqueue",) * 4 + ("claim",) * 3 + ("finish",) * 3 + (
    "advance", "drain", "repair", "pause",
)


class MemoryModel(QueueModel):
    url = "memory://"

    @rule(action=st.sampled_from(ACTIONS), data=st.data())
    def step(self, action: str, data: st.DataObject) -> None:
        getattr(self, action)(data)


class RedisModel(QueueModel):
    """The same model on a redis-server with `appendfsync always`, plus crashes and restarts."""

    spare: Doomed | None = None

    @rule(action=st.sampled_from((*ACTIONS, "crash", "restart")), data=st.data())
    def step(self, action: str, data: st.DataObject) -> None:
        getattr(self, action)(data)

    @classmethod
    def doomed(cls) -> Doomed:
        if cls.spare is None or cls.spare.proc.poll() is not None:
            cls.spare = Doomed(cls.directory, cls.url)
        spare, cls.spare = cls.spare, None
        return spare

    def crash(self, data: st.DataObject) -> None:
        """A worker process claims a job and is killed with SIGKILL; once its lease ran out the
        reaper requeues the job at the front (a lost run counts as a failure: dead at
        MAX_FAILS)."""
        if self.crashes >= MAX_CRASHES or not self._certainly_claimable():
            return
        self.crashes += 1
        TALLY["crash"] += 1
        doomed = type(self).doomed()
        try:
            t0 = time.time()
            claim = doomed.claim(self.namespace)
            t1 = time.time()
            assert claim is not None, f"the worker process claimed nothing: {self._ready()}"
        finally:
            doomed.kill()
            type(self).spare = Doomed(self.directory, self.url)  # warm for the next one
        killed = time.time()
        job = self._claimed(claim, t0, t1)
        # The lease ends CRASH_LEASE after the last renewal, sent before the kill (and applied
        # at most a moment later); the holders' reapers may be first: the same result.
        time.sleep(max(0.0, killed + CRASH_LEASE + 0.05 - time.time()))
        deadline = time.monotonic() + WAIT
        while any(b.job_id == job.id for b in self.queue.client.busy_workers()):
            assert time.monotonic() < deadline, f"{job} was never reaped"
            self.queue._core.reap()
            time.sleep(0.02)
        self.stats["reaped"] += 1
        job.fails += 1
        if job.fails >= MAX_FAILS:
            self.stats["dead"] += 1
            job.state = "dead"
            TALLY["reaped dead"] += 1
        else:
            job.state = "ready"
            self.ready[job.name].appendleft(job.id)

    def restart(self, data: st.DataObject) -> None:
        """kill -9 and start again on the AOF (`appendfsync always`): nothing acknowledged is
        lost, nothing else changes; every process reconnects."""
        if self.restarts >= MAX_RESTARTS:
            return
        self.restarts += 1
        TALLY["restart"] += 1
        assert self.redis is not None
        self.redis.kill()
        self.redis.start()
        deadline = time.monotonic() + WAIT
        while True:
            try:
                self.queue.client.stats()
                return
            except wh.QueueError:
                assert time.monotonic() < deadline, "the queue did not reconnect"
                time.sleep(0.05)


def run_model(machine: type[QueueModel], examples: int) -> None:
    """Run the state machine; print how long it took and what its steps did (a model whose
    steps were all skipped would prove little), pass or fail."""
    TALLY.clear()
    config = model_settings(examples)
    start = time.monotonic()
    try:
        run_state_machine_as_test(machine, settings=config)
    finally:
        print(
            f"\n{machine.__name__}: {config.max_examples} examples x {STEPS} steps in "
            f"{time.monotonic() - start:.1f} s; {dict(sorted(TALLY.items()))}"
        )


def test_the_queue_on_memory_agrees_with_its_model() -> None:
    run_model(MemoryModel, examples=30)


@pytest.fixture
def model_redis(aof_redis: RedisServer, tmp_path: Path) -> Iterator[type[RedisModel]]:
    machine = type(
        "RedisQueueModel",
        (RedisModel,),
        {"url": aof_redis.url, "redis": aof_redis, "directory": tmp_path},
    )
    try:
        yield machine
    finally:
        if machine.spare is not None:
            machine.spare.kill()


def test_the_queue_on_redis_agrees_with_its_model(model_redis: type[RedisModel]) -> None:
    run_model(model_redis, examples=20)
