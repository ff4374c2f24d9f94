"""wh.Channel: a bounded Rust channel with blocking, non-blocking and asyncio sends."""

from __future__ import annotations

import asyncio
import signal
import threading
import time

import pytest

import workhorse as wh

pytestmark = pytest.mark.timeout(10)


def test_items_come_out_in_order_and_unchanged():
    channel = wh.Channel(3)
    item = object()
    channel.send(1)
    channel.send(item)
    channel.send("three")
    assert channel.recv(1) == 1
    assert channel.recv(1) is item
    assert channel.recv(1) == "three"


def test_capacity_and_len():
    channel = wh.Channel(2)
    assert channel.capacity == 2
    assert len(channel) == 0
    channel.send("a")
    assert len(channel) == 1


def test_try_send_returns_false_when_full():
    channel = wh.Channel(1)
    assert channel.try_send(1) is True
    assert channel.try_send(2) is False
    assert channel.recv(1) == 1
    with pytest.raises(TimeoutError):
        channel.recv(0.01)


def test_send_with_timeout_raises_timeout_error_when_full():
    channel = wh.Channel(1)
    channel.send(1)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        channel.send(2, timeout=0.03)
    assert 0.025 <= time.monotonic() - start < 1.0
    assert len(channel) == 1


def test_send_waits_for_room():
    channel = wh.Channel(1)
    channel.send(1)
    threading.Timer(0.03, channel.recv).start()
    start = time.monotonic()
    channel.send(2, timeout=2)
    assert time.monotonic() - start >= 0.02
    assert channel.recv(1) == 2


def test_recv_timeout_raises_timeout_error_on_an_empty_channel():
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        wh.Channel(1).recv(0.02)
    assert time.monotonic() - start < 1.0


def test_recv_waits_for_an_item():
    channel = wh.Channel(1)
    threading.Timer(0.02, channel.send, args=("late",)).start()
    assert channel.recv(2) == "late"


# -- close ---------------------------------------------------------------------------------------


def test_close_marks_the_channel_closed():
    channel = wh.Channel(1)
    assert channel.closed is False
    channel.close()
    assert channel.closed is True


@pytest.mark.parametrize("send", ["send", "try_send"])
def test_send_on_a_closed_channel_raises_channel_closed(send):
    channel = wh.Channel(1)
    channel.close()
    with pytest.raises(wh.ChannelClosed):
        getattr(channel, send)("x")


def test_asend_on_a_closed_channel_raises_channel_closed(run_async):
    channel = wh.Channel(1)
    channel.close()
    with pytest.raises(wh.ChannelClosed):
        run_async(channel.asend("x"))


def test_receivers_drain_what_is_left_after_close_then_see_channel_closed():
    channel = wh.Channel(3)
    channel.send(1)
    channel.send(2)
    channel.close()
    assert [channel.recv(1), channel.recv(1)] == [1, 2]
    with pytest.raises(wh.ChannelClosed):
        channel.recv(1)


def test_close_is_idempotent():
    channel = wh.Channel(1)
    channel.close()
    channel.close()
    assert channel.closed


def test_close_wakes_a_sender_blocked_on_a_full_channel():
    channel = wh.Channel(1)
    channel.send(1)
    raised = []

    def blocked_send():
        try:
            channel.send(2, timeout=3)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            raised.append(exc)

    sender = threading.Thread(target=blocked_send)
    sender.start()
    time.sleep(0.02)
    channel.close()
    sender.join(2)
    assert not sender.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], wh.ChannelClosed)


def test_close_wakes_a_blocked_receiver():
    channel = wh.Channel(1)
    raised = []

    def blocked_recv():
        try:
            channel.recv(3)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            raised.append(exc)

    receiver = threading.Thread(target=blocked_recv)
    receiver.start()
    time.sleep(0.02)
    channel.close()
    receiver.join(2)
    assert not receiver.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], wh.ChannelClosed)


# -- asyncio -------------------------------------------------------------------------------------


def test_asend_puts_an_item_without_blocking_the_loop(run_async):
    channel = wh.Channel(2)

    async def main():
        await channel.asend("a")
        await channel.asend("b")

    run_async(main())
    assert [channel.recv(1), channel.recv(1)] == ["a", "b"]


def test_asend_on_a_full_channel_waits_while_the_loop_keeps_running(run_async):
    channel = wh.Channel(1)
    channel.send("first")

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        threading.Timer(0.05, channel.recv).start()
        await channel.asend("second", timeout=2)
        task.cancel()
        return ticks

    ticks = run_async(main())
    assert ticks >= 5, "the event loop was blocked while asend waited"
    assert channel.recv(1) == "second"


def test_asend_timeout_raises_timeout_error(run_async):
    channel = wh.Channel(1)
    channel.send(1)
    with pytest.raises(TimeoutError):
        run_async(channel.asend(2, timeout=0.02))


# -- threads, GIL and signals --------------------------------------------------------------------


def test_many_producers_and_consumers_lose_nothing():
    channel = wh.Channel(4)
    received = []
    lock = threading.Lock()

    def produce(base):
        for i in range(200):
            channel.send(base + i, timeout=3)

    def consume():
        while True:
            try:
                item = channel.recv(3)
            except wh.ChannelClosed:
                return
            with lock:
                received.append(item)

    producers = [threading.Thread(target=produce, args=(n * 1000,)) for n in range(3)]
    consumers = [threading.Thread(target=consume) for _ in range(3)]
    for t in producers + consumers:
        t.start()
    for t in producers:
        t.join(5)
    channel.close()
    for t in consumers:
        t.join(5)
    assert sorted(received) == sorted(n * 1000 + i for n in range(3) for i in range(200))


def test_a_blocked_send_releases_the_gil():
    channel = wh.Channel(1)
    channel.send(0)
    counter = [0]
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            counter[0] += 1

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        time.sleep(0.01)
        before = counter[0]
        with pytest.raises(TimeoutError):
            channel.send(1, timeout=0.1)
        assert counter[0] - before > 1000, "the other thread did not run during send"
    finally:
        stop.set()
        spinner.join(2)


class _Alarm(Exception):
    pass


@pytest.fixture
def alarm():
    """alarm(seconds): raise _Alarm in the main thread after that many seconds."""

    def on_alarm(signum, frame):
        raise _Alarm()

    previous = signal.signal(signal.SIGALRM, on_alarm)

    def arm(seconds):
        signal.setitimer(signal.ITIMER_REAL, seconds)

    yield arm
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs SIGALRM")
def test_a_blocked_send_is_interrupted_by_a_signal(alarm):
    channel = wh.Channel(1)
    channel.send(0)
    alarm(0.03)
    start = time.monotonic()
    with pytest.raises(_Alarm):
        channel.send(1)  # no timeout: only the signal can end this
    assert time.monotonic() - start < 1.0


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs SIGALRM")
def test_a_blocked_recv_is_interrupted_by_a_signal(alarm):
    channel = wh.Channel(1)
    alarm(0.03)
    start = time.monotonic()
    with pytest.raises(_Alarm):
        channel.recv()
    assert time.monotonic() - start < 1.0
