"""A loopback TCP proxy in front of a test's redis-server that can misbehave on demand
(RELIABILITY.md section 4, rows 12 and 13): the network faults a real deployment sees, injected
between real clients and a real server.

`Proxy(port)` listens on a free loopback port in a thread of its own (its own asyncio loop) and
forwards every connection to 127.0.0.1:`port`. Modes switch at runtime, from any thread:

- `passthrough()`: forward both ways (the start);
- `latency(seconds)`: hold every chunk that long before forwarding it;
- `blackhole()`: a connection that carries a byte in this mode is dead for good: what it sends
  is read and thrown away, nothing comes back, and it is never closed (a half-open connection:
  the peer vanished without a FIN or RST). New connections are accepted and die the same way.
  After `passthrough()` new connections work again; dead ones stay dead, so a client recovers
  only by giving up on its connection and opening a new one;
- `drop_reply(match, count=1, then="close" | "hang")`: the request is forwarded (Redis applies
  it), but the reply of the next `count` requests for which `match(args)` is true (args: the
  command as a list of bytes) never reaches the client; error replies pass and are not counted.
  Then the connection is closed (`"close"`: the client sees the connection drop after sending),
  or goes silent (`"hang"`: the client waits for a reply that never comes);
- `cut()`: close every open connection now (both sides).

The proxy parses RESP (2 and 3) in both directions, enough to pair each reply with its request.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable
from typing import Any

Matcher = Callable[[list[bytes]], bool]


class _Incomplete(Exception):
    pass


def _parse(buf: bytes | bytearray, pos: int) -> tuple[Any, int]:
    """One RESP value at buf[pos:]: (value, end). Raises _Incomplete when more bytes are needed.

    Aggregates come back as lists of their items; errors as ("error", text); everything else as
    the raw bytes of its payload (only requests' bulk strings are looked at)."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind, line, after = buf[pos : pos + 1], bytes(buf[pos + 1 : end]), end + 2
    if kind in (b"+", b":", b",", b"#", b"(", b"_"):
        return line, after
    if kind == b"-":
        return ("error", line), after
    if kind in (b"$", b"=", b"!"):  # bulk, verbatim, bulk error
        n = int(line)
        if n < 0:
            return None, after
        if len(buf) < after + n + 2:
            raise _Incomplete
        data = bytes(buf[after : after + n])
        return (("error", data) if kind == b"!" else data), after + n + 2
    if kind in (b"*", b"~", b">", b"%", b"|"):  # array, set, push, map, attribute
        n = int(line)
        if n < 0:
            return None, after
        if kind in (b"%", b"|"):
            n *= 2
        items = []
        for _ in range(n):
            item, after = _parse(buf, after)
            items.append(item)
        if kind == b"|":  # an attribute precedes the real reply
            value, after = _parse(buf, after)
            return value, after
        return items, after
    # An inline command (PING\r\n typed on a raw socket): the words of the line.
    return bytes(buf[pos:end]).split(), after


def _take_all(buf: bytearray) -> list[tuple[Any, bytes]]:
    """Every complete value at the front of buf, each with its raw bytes; removes them."""
    out: list[tuple[Any, bytes]] = []
    pos = 0
    while pos < len(buf):
        try:
            value, end = _parse(buf, pos)
        except _Incomplete:
            break
        out.append((value, bytes(buf[pos:end])))
        pos = end
    del buf[:pos]
    return out


class _Conn:
    def __init__(
        self,
        proxy: Proxy,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.proxy = proxy
        self.c_reader, self.c_writer = client
        self.s_reader, self.s_writer = server
        self.dead = False  # black-holed: never forwards or answers again
        # Per request sent upstream and not yet answered: drop its reply?
        self.pending: collections.deque[bool] = collections.deque()

    def close(self) -> None:
        for w in (self.c_writer, self.s_writer):
            w.close()

    def kill_quietly(self) -> None:
        # Half-open from the client's side: its socket stays open, the server's is closed.
        self.dead = True
        self.s_writer.close()

    async def _next(self, reader: asyncio.StreamReader) -> bytes | None:
        """The next chunk to forward, after the proxy's delay; None at the end of the stream;
        b"" once black-holed (the connection is then made half-open, see kill_quietly)."""
        chunk = await reader.read(65536)
        if not chunk:
            return None
        if self.dead or self.proxy.mode == "blackhole":
            if not self.dead:
                self.proxy.blackholed += 1
                self.kill_quietly()
            return b""
        if self.proxy.delay:
            await asyncio.sleep(self.proxy.delay)
        return chunk

    async def upstream(self) -> None:
        buf = bytearray()
        try:
            while True:
                chunk = await self._next(self.c_reader)
                if chunk is None:
                    break
                if not chunk:
                    continue  # black-holed: read on, the client's side stays open
                buf += chunk
                for value, _raw in _take_all(buf):
                    args = value if isinstance(value, list) else []
                    self.pending.append(self.proxy._wants_drop(args))
                self.s_writer.write(chunk)
                await self.s_writer.drain()
        except (ConnectionError, OSError, ValueError):
            pass
        if not self.dead:
            self.close()

    async def downstream(self) -> None:
        buf = bytearray()
        try:
            while True:
                chunk = await self._next(self.s_reader)
                if chunk is None:
                    break
                if not chunk:
                    return  # black-holed: nothing more goes back to the client
                buf += chunk
                out = bytearray()
                for value, raw in _take_all(buf):
                    drop = self.pending.popleft() if self.pending else False
                    is_error = isinstance(value, tuple) and value[:1] == ("error",)
                    if drop and is_error:
                        self.proxy._undo_drop()  # not applied: let it through, not counted
                        drop = False
                    if drop:
                        self.proxy.dropped += 1
                        if out:
                            self.c_writer.write(bytes(out))
                            await self.c_writer.drain()
                        if self.proxy.then == "hang":
                            self.kill_quietly()
                        else:
                            self.close()
                        return
                    out += raw
                if out:
                    self.c_writer.write(bytes(out))
                    await self.c_writer.drain()
        except (ConnectionError, OSError, ValueError):
            pass
        if not self.dead:
            self.close()


class Proxy:
    """See the module docs. `proxy.url(db)` is what the clients connect to."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.mode = "pass"
        self.delay = 0.0
        self.then = "close"
        self.accepted = 0  # connections accepted so far
        self.blackholed = 0  # connections that died in a black hole
        self.dropped = 0  # replies swallowed
        self._match: Matcher | None = None
        self._drops_left = 0
        self._lock = threading.Lock()
        self._conns: set[_Conn] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="proxy", daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        self.port: int = self._server.sockets[0].getsockname()[1]

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            server = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        conn = _Conn(self, (reader, writer), server)
        self._conns.add(conn)
        try:
            await asyncio.gather(conn.upstream(), conn.downstream())
        except asyncio.CancelledError:
            pass  # closed at shutdown: ended, not failed (asyncio's server logs failures)
        finally:
            self._conns.discard(conn)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def connections(self) -> int:
        """Connections open now (dead ones included)."""
        return len(self._conns)

    # -- modes ------------------------------------------------------------------------------

    def passthrough(self) -> None:
        """Forward both ways, at once (black-holed connections stay dead)."""
        self.mode, self.delay = "pass", 0.0

    def latency(self, seconds: float) -> None:
        """Hold every chunk `seconds` before forwarding it."""
        self.mode, self.delay = "pass", seconds

    def blackhole(self) -> None:
        """Accept and read, never forward or answer, never close: half-open connections."""
        self.mode = "blackhole"

    def drop_reply(self, match: Matcher, count: int = 1, then: str = "close") -> None:
        """Forward the next `count` requests `match` accepts, swallow their (non-error) replies,
        then close the connection (`then="close"`) or leave it silent (`"hang"`)."""
        if then not in ("close", "hang"):
            raise ValueError("then must be 'close' or 'hang'")
        with self._lock:
            self._match, self._drops_left, self.then = match, count, then

    def cut(self) -> None:
        """Close every connection open now, both sides."""

        def close_all() -> None:
            for conn in list(self._conns):
                conn.close()

        self._loop.call_soon_threadsafe(close_all)

    def close(self) -> None:
        """Stop listening, close every connection, end the thread."""

        async def shutdown() -> None:
            self._server.close()
            for conn in list(self._conns):
                conn.close()
            # Closed both ways, every connection's task ends by itself; stragglers are cancelled.
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            if tasks:
                _done, pending = await asyncio.wait(tasks, timeout=2)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)

        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    # -- called by the connections ----------------------------------------------------------

    def _wants_drop(self, args: list[Any]) -> bool:
        with self._lock:
            if self._drops_left <= 0 or self._match is None:
                return False
            words = [a for a in args if isinstance(a, bytes)]
            if not self._match(words):
                return False
            self._drops_left -= 1
            return True

    def _undo_drop(self) -> None:
        with self._lock:
            self._drops_left += 1
