"""One small HTTP server per process for /metrics and the health path."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from workhorse.adapters.health import HealthCheck

__all__ = ["Server", "serve"]

logger = logging.getLogger("workhorse")

Route = Callable[[str], tuple[int, str, bytes]]  # Accept header -> (status, content type, body)

_lock = threading.Lock()
_servers: dict[tuple[str, int], Server] = {}


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    routes: dict[str, Route]


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    timeout = 30  # a client that connects and says nothing does not hold a thread forever

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._answer(body=True)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        route = self.server.routes.get(self.path.split("?", 1)[0])
        if route is None:
            status, content_type, payload = 404, "text/plain; charset=utf-8", b"not found\n"
        else:
            try:
                status, content_type, payload = route(self.headers.get("Accept", ""))
            except Exception:  # noqa: BLE001 - a failing collector must not kill the server
                logger.exception("serving %s failed", self.path)
                status, content_type, payload = 500, "text/plain; charset=utf-8", b"error\n"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("http %s: " + format, self.address_string(), *args)


class Server:
    """A running HTTP server; close() stops it. Made by serve()."""

    def __init__(self, host: str, port: int, routes: dict[str, Route], key: tuple[object, ...]):
        cls = _HTTPServer6 if ":" in host else _HTTPServer
        self._httpd = cls((host, port), _Handler)
        self._httpd.routes = routes
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


def serve(
    host: str = "127.0.0.1",
    port: int = 9090,
    *,
    registry: CollectorRegistry | None = None,
    health: HealthCheck | None = None,
    health_path: str = "/ready",
    metrics_path: str = "/metrics",
) -> Server:
    """Serve metrics_path and health_path from a daemon thread; port 0 picks a free port.

    There is one server per process and address: serving again on the same host and port
    returns the running server (a ValueError if asked to serve something else there).
    """
    if not isinstance(host, str) or not host:
        raise TypeError(f"host must be a non-empty str, got {host!r}")
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, got {type(port).__name__}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in 0..65535, got {port}")
    for name, path in (("health_path", health_path), ("metrics_path", metrics_path)):
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"{name} must be a path starting with '/', got {path!r}")
    if health_path == metrics_path:
        raise ValueError(f"health_path and metrics_path are both {health_path!r}")
    try:
        import prometheus_client
    except ImportError as exc:
        hint = "serving metrics needs prometheus-client: pip install workhorse[prometheus]"
        raise ImportError(hint) from exc
    registry = prometheus_client.REGISTRY if registry is None else registry
    key = (id(registry), id(health), health_path, metrics_path)
    with _lock:
        running = _servers.get((host, port))
        if running is not None and running.running:
            if running._key != key:
                raise ValueError(f"{running.url} already serves a different registry or health")
            return running
        routes = {metrics_path: _metrics_route(registry), health_path: _health_route(health)}
        server = Server(host, port, routes, key)
        _servers[(host, port)] = _servers[(host, server.port)] = server
    return server
