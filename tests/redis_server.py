"""A redis-server of the queue tests' own, on a free loopback port, and raw RESP to talk to it.

Never the machine's redis on 6379: each session starts its own server (no persistence, files in
a temporary directory) and kills it at the end. The tests reach Redis through the workhorse API;
the few commands they need directly (PING, FLUSHALL, DBSIZE, KEYS) go over a plain socket here,
so no Redis client library is needed.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from typing import Any

REDIS_SERVER = shutil.which("redis-server")


class RespError(Exception):
    """Redis answered with an error reply (-ERR ...)."""


def _encode(*args: object) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = b""

    def _line(self) -> bytes:
        while b"\r\n" not in self._buf:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\r\n", 1)
        return line

    def _exact(self, n: int) -> bytes:
        while len(self._buf) < n + 2:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n + 2 :]
        return data

    def reply(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise RespError(f"unexpected reply {line!r}")


def command(port: int, *args: object, timeout: float = 2.0) -> Any:
    """Send one command to 127.0.0.1:port and return its parsed reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(_encode(*args))
        return _Reader(sock).reply()


def free_port() -> int:
    """A loopback port nobody listens on right now (bound to 0, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """`RedisServer(tmpdir)` starts redis-server on a free port and waits for PING.

    `aof=True` turns on the append-only file, by default with `appendfsync always` (every
    acknowledged write is on disk before the reply); `kill()` is kill -9 and `start()` starts it
    again on the same port and directory, so a test (or the soak bench) can restart Redis under
    its clients' feet.
    """

    def __init__(
        self, directory: str, start_timeout: float = 10.0, *, aof: bool = False,
        appendfsync: str = "always", extra: tuple[str, ...] = (),
    ) -> None:
        if REDIS_SERVER is None:
            raise FileNotFoundError("redis-server is not installed")
        self.directory, self.aof, self.extra = directory, aof, extra
        self.appendfsync = appendfsync
        last: BaseException | None = None
        # A port found free may be taken before redis binds it: try a few.
        for _ in range(5):
            self.port = free_port()
            try:
                self.start(start_timeout)
                return
            except (RuntimeError, OSError) as exc:
                last = exc
                self.stop()
        raise RuntimeError(f"redis-server did not start: {last}")

    def start(self, timeout: float = 10.0) -> float:
        """Start (again) on this server's port and directory; wait until it answers PING (its
        append-only file loaded): the seconds that took."""
        assert REDIS_SERVER is not None
        began = time.monotonic()
        persistence = (
            ["--appendonly", "yes", "--appendfsync", self.appendfsync]
            if self.aof
            else ["--appendonly", "no"]
        )
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--dir", self.directory,
                *persistence,
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_ready(timeout)
        return time.monotonic() - began

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                if self.ping():
                    return
            except (OSError, RespError):  # refused, or LOADING the append-only file
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, *args: object) -> Any:
        return command(self.port, *args)

    def ping(self) -> bool:
        return bool(self.command("PING") == "PONG")

    def flushall(self) -> None:
        self.command("FLUSHALL")

    def keys(self, pattern: str) -> list[str]:
        return sorted(k.decode() for k in self.command("KEYS", pattern))

    def kill(self) -> None:
        """kill -9 the server and reap it (again is fine)."""
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    stop = kill
