"""`serve_dashboard`: the dashboard in an HTTP server of its own (what `workhorse web` runs)."""

from __future__ import annotations

from workhorse.queue import Queue
from workhorse.server import Server, check_address
from workhorse.web.app import Dashboard

__all__ = ["DEFAULT_PORT", "serve_dashboard"]

DEFAULT_PORT = 5040  # gocraft's workwebui's


def serve_dashboard(
    queue: Queue | Dashboard,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    auth: str | None = None,
    read_only: bool = False,
) -> Server:
    """Serve the dashboard of `queue` at http://host:port/ from a daemon thread (port 0 picks
    a free port); `.url` is where, `.close()` stops it.

    Binds loopback by default. Any other host needs `auth` ("USER:PASSWORD" or a token):
    without it this raises `InsecureBind` (a ValueError) before listening. Unlike
    `workhorse.server.serve`, every call starts a new server (an address in use is an OSError).
    """
    check_address(host, port)
    if isinstance(queue, Dashboard):
        if auth is not None or read_only:
            raise ValueError("give auth and read_only to the Dashboard, not serve_dashboard")
        dashboard = queue
    else:
        dashboard = Dashboard(queue, auth=auth, read_only=read_only)
    dashboard.check_host(host)
    return Server(host, port, {}, ("dashboard", id(dashboard)), {"": dashboard})
