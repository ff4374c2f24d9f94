"""The network between the queue and Redis misbehaving (RELIABILITY.md rows 12 and 13), injected
by a TCP proxy between real clients and a real redis-server (tests/faults/proxy.py):

- row 12, a half-open connection: the proxy black-holes (reads, never answers, never closes).
  Every command gives up after `command_timeout` and replaces its connection; enqueue raises
  QueueError, stop() returns, and once the network is back jobs flow again;
- row 13, an enqueue applied whose reply is lost: the core sends the call once more, with the
  same job ids and request id, and the script answers as the first time: one job, one run.

The handlers' ledger (a list in this process) is the truth, never Redis.
"""

from __future__ import annotations

import threading
import time

import pytest
from harness import wait_for
from proxy import Proxy
from redis_server import RedisServer

import workhorse as wh

pytestmark = pytest.mark.timeout(60)

T = 1.0  # command_timeout: well under a third of the lease (row 12)
L, R, G = 3.0, 0.3, 0.5


class Ledger:
    """Runs that ended by job id (not those cancelled at stop), thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.runs: list[str] = []
        self.cancelled: list[str] = []

    def add(self, job_id: str, cancelled: bool = False) -> None:
        with self._lock:
            (self.cancelled if cancelled else self.runs).append(job_id)

    def ids(self) -> list[str]:
        with self._lock:
            return list(self.runs)


def make_worker(url: str, ns: str, ledger: Ledger) -> wh.Worker:
    queue = wh.Queue.from_url(url, namespace=ns, lease=L, reaper_interval=R, command_timeout=T)
    worker = wh.Worker(concurrency=4, queue=queue, grace=G)

    @worker.handler("job", max_fails=10, backoff=lambda job: 0.1)
    def job(j: wh.Job) -> None:
        deadline = time.monotonic() + j.args.get("seconds", 0)
        while time.monotonic() < deadline and not j.ctx.cancelled:
            time.sleep(0.01)
        ledger.add(j.id, j.ctx.cancelled)

    return worker


def enqueue_until(queue: wh.Queue, n: int, deadline: float) -> list[str]:
    """Enqueue n jobs, retrying each until it is acknowledged (or the deadline passes)."""
    ids = []
    end = time.monotonic() + deadline
    for _ in range(n):
        while True:
            try:
                ids.append(queue.enqueue("job").id)
                break
            except wh.QueueError:
                assert time.monotonic() < end, "enqueue never worked again"
                time.sleep(0.1)
    return ids


def test_a_half_open_connection_times_out_and_is_replaced(
    proxy: Proxy, capfd: pytest.CaptureFixture[str]
) -> None:
    ledger = Ledger()
    worker = make_worker(proxy.url(), "half", ledger)
    client = wh.Queue.from_url(proxy.url(), namespace="half", command_timeout=T)
    acked = enqueue_until(client, 10, 5)
    worker.start()
    try:
        assert wait_for(lambda: set(acked) <= set(ledger.ids()), 10)
        proxy.blackhole()
        t0 = time.monotonic()
        with pytest.raises(wh.QueueError, match="command_timeout|timed out"):
            client.enqueue("job")
        took = time.monotonic() - t0
        # One attempt and the one retry, each given up after T.
        assert T * 0.9 <= took <= 2 * T + 2.0, took
        time.sleep(2 * T)  # the worker's own commands time out meanwhile
        proxy.passthrough()
        acked += enqueue_until(client, 10, 10)
        assert wait_for(lambda: set(acked) <= set(ledger.ids()), 15), (
            sorted(set(acked) - set(ledger.ids()))
        )
    finally:
        assert worker.stop(10)
    # The client's and the worker's connections died in the hole and were replaced.
    assert proxy.blackholed >= 2, proxy.blackholed
    assert "command_timeout" in capfd.readouterr().err  # the worker's calls gave up, logged


def test_stop_returns_within_its_bound_while_redis_is_unreachable_and_the_job_runs_again(
    proxy: Proxy, own_redis: RedisServer
) -> None:
    ledger = Ledger()
    worker = make_worker(proxy.url(), "stop", ledger)
    client = wh.Queue.from_url(own_redis.url, namespace="stop")  # direct: not in the hole
    job = client.enqueue("job", {"seconds": 2})
    worker.start()
    assert wait_for(lambda: client.client.busy_workers(), 10)
    proxy.blackhole()
    t0 = time.monotonic()
    stopped = worker.stop(30)
    took = time.monotonic() - t0
    # Grace, then the release cannot reach Redis: given up a lease after the first failure
    # (each try bounded by T), then a goodbye of at most 1 s.
    assert stopped and took <= G + L + 3 * T + 3.0, took
    assert ledger.cancelled == [job.id] and ledger.ids() == []  # cancelled at the grace
    proxy.passthrough()
    # Its release never arrived: the lease runs out and another worker runs it again.
    other = make_worker(proxy.url(), "stop", ledger)
    other.start()
    try:
        assert wait_for(lambda: job.id in ledger.ids(), L + R + 10)
    finally:
        other.stop(10)
    info = client.client.queues()
    assert [(q.ready, q.running, q.retry) for q in info] == [(0, 0, 0)], info


@pytest.mark.parametrize("then", ["close", "hang"])
@pytest.mark.parametrize("kind", ["enqueue", "enqueue_job_id", "enqueue_many"])
def test_an_enqueue_whose_reply_is_lost_is_sent_again_and_makes_one_job(
    proxy: Proxy,
    own_redis: RedisServer,
    capfd: pytest.CaptureFixture[str],
    then: str,
    kind: str,
) -> None:
    ledger = Ledger()
    # The worker talks to Redis directly and runs a job as soon as it is stored: by the time
    # the client sends the call again the job may have run and been deleted already.
    worker = make_worker(own_redis.url, "lost", ledger)
    worker.start()
    client = wh.Queue.from_url(proxy.url(), namespace="lost", command_timeout=T)
    try:
        client.enqueue("job")  # the scripts are loaded; the first run is in the ledger
        assert wait_for(lambda: len(ledger.ids()) == 1, 10)
        marker = b"lost-reply"
        proxy.drop_reply(lambda args: any(marker in a for a in args), count=1, then=then)
        t0 = time.monotonic()
        if kind == "enqueue":
            ids = [client.enqueue("job", {"tag": marker.decode()}).id]
        elif kind == "enqueue_job_id":
            ids = [client.enqueue("job", {"tag": marker.decode()}, job_id="order-7").id]
            assert ids == ["order-7"]
        else:
            pairs = [("job", {"tag": marker.decode(), "i": i}) for i in range(20)]
            jobs = client.enqueue_many(pairs)
            ids = [j.id for j in jobs]
        took = time.monotonic() - t0
        assert proxy.dropped == 1  # Redis applied the call; its reply never came back
        if then == "hang":
            assert took >= T * 0.9, took  # the reply was waited for, up to the timeout
        assert wait_for(lambda: set(ids) <= set(ledger.ids()), 10)
        assert worker.drain(10)
    finally:
        worker.stop(10)
    runs = ledger.ids()[1:]
    assert sorted(runs) == sorted(ids), "every job ran exactly once"
    stats = client.client.stats()
    assert stats["processed"] == 1 + len(ids), stats
    assert [(q.ready, q.running, q.scheduled) for q in client.client.queues()] == [(0, 0, 0)]
    assert "sending it again" in capfd.readouterr().err


def test_the_proxy_adds_latency_and_a_cut_connection_is_reopened(proxy: Proxy) -> None:
    # The proxy's other modes, and the client across them: slower, then back on a new connection.
    client = wh.Queue.from_url(proxy.url(), namespace="modes", command_timeout=2.0)
    client.enqueue("job")
    proxy.latency(0.2)
    t0 = time.monotonic()
    client.enqueue("job")
    assert time.monotonic() - t0 >= 0.35  # the request and its reply each held 0.2 s
    proxy.passthrough()
    assert proxy.connections >= 1
    proxy.cut()
    assert wait_for(lambda: proxy.connections == 0, 5)
    accepted = proxy.accepted
    client.enqueue("job")  # on a new connection (sent again if the first try hit the cut)
    assert proxy.accepted > accepted
    (q,) = client.client.queues()
    assert q.ready == 3


@pytest.mark.parametrize("then", ["close", "hang"])
def test_a_fetch_whose_reply_is_lost_gets_its_claims_back_when_sent_again(
    proxy: Proxy, own_redis: RedisServer, capfd: pytest.CaptureFixture[str], then: str
) -> None:
    # Found by the soak (row 21): a claim whose reply a cut connection lost was leased to nobody
    # until the reaper took it back with a failure counted. The consumer now sends the same
    # fetch again (same request id) and Redis answers the claims it made.
    ns = f"fetch{then}"
    queue = wh.Queue.from_url(proxy.url(), namespace=ns, lease=L, reaper_interval=R,
                              command_timeout=T)
    worker = wh.Worker(concurrency=2, queue=queue, grace=G)
    runs: list[tuple[str, int, float]] = []

    @worker.handler("fetched", max_fails=10)
    def fetched(j: wh.Job) -> None:
        runs.append((j.id, j.fails, time.monotonic()))

    client = wh.Queue.from_url(own_redis.url, namespace=ns, lease=L, reaper_interval=R)
    worker.start()
    try:
        client.client.pause("fetched")
        job = client.enqueue("fetched")
        # Armed while the name is paused, so the fetch whose reply goes is the one that claims.
        proxy.drop_reply(lambda args: b"fetched" in args, count=1, then=then)
        t0 = time.monotonic()
        client.client.unpause("fetched")
        assert wait_for(lambda: runs, 3 * L)
        assert worker.drain(10)
    finally:
        worker.stop(10)
    assert proxy.dropped == 1
    (run,) = runs
    assert run[:2] == (job.id, 0), "the claim came back to its worker: no failure counted"
    assert run[2] - t0 < L, "it ran before its lease could have run out"
    stats = client.client.stats()
    assert stats["reaped"] == 0 and stats["processed"] == 1, stats
    assert "claiming jobs failed, retrying" in capfd.readouterr().err
