"""One small HTTP server per process for /metrics, the health path and the dashboard.

Exact routes (/metrics, /ready) answer GET and HEAD. Apps mounted at a path prefix (the
dashboard, workhorse.web) get every request below it, POST and DELETE included, as a `Request`
and answer with a `Response`; they do their own checks (authentication, CSRF).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from workhorse.adapters.health import HealthCheck
    from workhorse.queue import Queue
    from workhorse.web import Dashboard

__all__ = ["App", "Request", "Response", "Server", "serve"]

logger = logging.getLogger("workhorse")

Route = Callable[[str], tuple[int, str, bytes]]  # Accept header -> (status, content type, body)

# A request body larger than this is refused (413) before it is read: nothing served here takes
# more than a few bytes.
MAX_BODY = 64 * 1024


class Request(NamedTuple):
    """One request as a mounted app sees it."""

    method: str  # GET, HEAD, POST, DELETE, ...
    path: str  # below the mount point, starting with "/", still percent-encoded
    query: str  # after "?", still percent-encoded ("" without one)
    headers: Message
    body: bytes
    mount: str  # where the app is mounted: "" at the root, else e.g. "/dashboard"


class Response(NamedTuple):
    """A mounted app's answer; a HEAD request gets its headers without the body."""

    status: int
    content_type: str
    body: bytes
    headers: Sequence[tuple[str, str]] = ()


App = Callable[[Request], Response]

_lock = threading.Lock()
_servers: dict[tuple[str, int], Server] = {}


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # close() must not wait for idle keep-alive connections (a browser holds some open).
    block_on_close = False
    routes: dict[str, Route]
    mounts: list[tuple[str, App]]  # longest prefix first

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the client went away (a browser closing a keep-alive connection)
        logger.exception("http: serving %s failed", client_address)


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


_TEXT = "text/plain; charset=utf-8"


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "workhorse"  # not the Python version
    sys_version = ""
    timeout = 30  # a client that connects and says nothing does not hold a thread forever

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._answer()

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
        self._answer()

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self._answer()

    def do_DELETE(self) -> None:  # noqa: N802 - http.server's name
        self._answer()

    def _answer(self) -> None:
        path, _, query = self.path.partition("?")
        route = self.server.routes.get(path)
        if route is not None:
            if self.command not in ("GET", "HEAD"):
                self._send(Response(405, _TEXT, b"method not allowed\n", [("Allow", "GET, HEAD")]))
                return
            try:
                status, content_type, payload = route(self.headers.get("Accept", ""))
            except Exception:  # noqa: BLE001 - a failing collector must not kill the server
                logger.exception("serving %s failed", self.path)
                status, content_type, payload = 500, _TEXT, b"error\n"
            self._send(Response(status, content_type, payload))
            return
        for prefix, app in self.server.mounts:
            if path == prefix and prefix:
                # The apps link relatively (static/app.js): their root must end with a slash.
                location = prefix + "/" + ("?" + query if query else "")
                self._send(Response(308, _TEXT, b"", [("Location", location)]))
                return
            if path.startswith(prefix + "/"):
                body = self._body()
                if body is None:
                    return
                below = path[len(prefix) :]
                request = Request(self.command, below, query, self.headers, body, prefix)
                try:
                    response = app(request)
                except Exception:  # noqa: BLE001 - a failing app must not kill the server
                    logger.exception("serving %s %s failed", self.command, self.path)
                    response = Response(500, _TEXT, b"error\n")
                self._send(response)
                return
        self._send(Response(404, _TEXT, b"not found\n"))

    def _body(self) -> bytes | None:
        """The request's body (b"" without one); None once a refusal has been sent."""
        if self.headers.get("Transfer-Encoding") is not None:
            self.close_connection = True
            self._send(Response(411, _TEXT, b"send a Content-Length, not a chunked body\n"))
            return None
        raw = self.headers.get("Content-Length", "0")
        try:
            length = int(raw)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._send(Response(400, _TEXT, b"bad Content-Length\n"))
            return None
        if length > MAX_BODY:
            self.close_connection = True  # the unread body must not be taken for a request
            self._send(Response(413, _TEXT, b"request body too large\n"))
            return None
        return self.rfile.read(length) if length else b""

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            try:
                self.wfile.write(response.body)
            except (BrokenPipeError, ConnectionResetError):
                # The client went away (a browser left the page): nothing to tell it.
                self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("http %s: " + format, self.address_string(), *args)


class Server:
    """A running HTTP server; close() stops it. Made by serve() and web.serve_dashboard()."""

    def __init__(
        self,
        host: str,
        port: int,
        routes: dict[str, Route],
        key: tuple[object, ...],
        mounts: dict[str, App] | None = None,
    ):
        cls = _HTTPServer6 if ":" in host else _HTTPServer
        self._httpd = cls((host, port), _Handler)
        self._httpd.routes = routes
        self._httpd.mounts = sorted((mounts or {}).items(), key=lambda m: -len(m[0]))
        self._key = key
        self._pid = os.getpid()
        self.host = host
        self.port: int = self._httpd.server_address[1]
        # close() waits for one poll of the accept loop: 0.1 s is quick and still idle.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            args=(0.1,),
            name=f"workhorse-http-{self.port}",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:9090."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and self._pid == os.getpid()

    def close(self) -> None:
        """Stop serving and free the port."""
        with _lock:
            for k in [k for k, s in _servers.items() if s is self]:
                del _servers[k]
        if self.running:
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Server({self.url})"


def _metrics_route(registry: CollectorRegistry) -> Route:
    from prometheus_client.exposition import choose_encoder

    def metrics(accept: str) -> tuple[int, str, bytes]:
        encode, content_type = choose_encoder(accept)  # text format unless OpenMetrics is asked
        return 200, content_type, encode(registry)

    return metrics


def _health_route(health: HealthCheck | None) -> Route:
    def ready(accept: str) -> tuple[int, str, bytes]:
        status, body = (200, b"OK") if health is None else health.endpoint()
        return status, "text/plain; charset=utf-8", body

    return ready


def check_address(host: object, port: object) -> None:
    """TypeError / ValueError for a host or port that cannot be served on."""
    if not isinstance(host, str) or not host:
        raise TypeError(f"host must be a non-empty str, got {host!r}")
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, got {type(port).__name__}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in 0..65535, got {port}")


def serve(
    host: str = "127.0.0.1",
    port: int = 9090,
    *,
    registry: CollectorRegistry | None = None,
    health: HealthCheck | None = None,
    health_path: str = "/ready",
    metrics_path: str = "/metrics",
    dashboard: Dashboard | Queue | None = None,
    dashboard_path: str = "/",
) -> Server:
    """Serve metrics_path and health_path from a daemon thread; port 0 picks a free port.

    `dashboard` (a `workhorse.web.Dashboard`, or a Queue for one with the defaults) adds the
    dashboard below `dashboard_path`; like `workhorse.web.serve_dashboard`, it is refused on a
    host other than loopback unless the Dashboard has `auth`.

    There is one server per process and address: serving again on the same host and port
    returns the running server (a ValueError if asked to serve something else there).
    """
    check_address(host, port)
    for name, path in (("health_path", health_path), ("metrics_path", metrics_path)):
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"{name} must be a path starting with '/', got {path!r}")
    if health_path == metrics_path:
        raise ValueError(f"health_path and metrics_path are both {health_path!r}")
    mounts: dict[str, App] = {}
    if dashboard is not None:
        from workhorse.web import Dashboard

        if not isinstance(dashboard_path, str) or not dashboard_path.startswith("/"):
            raise ValueError(f"dashboard_path must start with '/', got {dashboard_path!r}")
        app = dashboard if isinstance(dashboard, Dashboard) else Dashboard(dashboard)
        app.check_host(host)
        mounts[dashboard_path.rstrip("/")] = app
    try:
        import prometheus_client
    except ImportError as exc:
        hint = "serving metrics needs prometheus-client: pip install workhorse[prometheus]"
        raise ImportError(hint) from exc
    registry = prometheus_client.REGISTRY if registry is None else registry
    key = (id(registry), id(health), health_path, metrics_path, id(dashboard), dashboard_path)
    with _lock:
        running = _servers.get((host, port))
        if running is not None and running.running:
            if running._key != key:
                raise ValueError(
                    f"{running.url} already serves a different registry, health or dashboard"
                )
            return running
        routes = {metrics_path: _metrics_route(registry), health_path: _health_route(health)}
        server = Server(host, port, routes, key, mounts)
        _servers[(host, port)] = _servers[(host, server.port)] = server
    return server
