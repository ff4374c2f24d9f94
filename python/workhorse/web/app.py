"""`Dashboard`: the web app of one queue: the page, its static files and the JSON API.

A plain callable from a `workhorse.server.Request` to a `Response`, so it runs in its own server
(`serve_dashboard`) or beside /metrics and /ready (`workhorse.server.serve(dashboard=...)`).
The page is hand-written HTML, CSS and JavaScript in static/ (no build step); the only thing
filled in when it is served is its CSRF token and the read-only flag, in meta tags.
"""

from __future__ import annotations

import html
import json
import logging
import secrets
from importlib import resources
from typing import Any

from workhorse.errors import QueueError
from workhorse.queue import Queue
from workhorse.server import Request, Response
from workhorse.web.api import Api, ApiError
from workhorse.web.security import (
    SECURITY_HEADERS,
    Credentials,
    cross_site_reason,
    csrf_ok,
    is_loopback,
    is_loopback_host_header,
)

__all__ = ["Dashboard", "InsecureBind"]

logger = logging.getLogger("workhorse.web")

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


class InsecureBind(ValueError):
    """Serving the dashboard without credentials on an address other people can reach."""


def _static_files() -> dict[str, bytes]:
    root = resources.files("workhorse.web").joinpath("static")
    return {f.name: f.read_bytes() for f in root.iterdir() if f.is_file()}


class Dashboard:
    """The dashboard of `queue`. `auth`: "USER:PASSWORD" (HTTP Basic) or a token (Bearer, or
    the Basic password of any user); needed to serve anywhere but loopback. `read_only`: every
    state-changing request is refused (403) and the page shows no buttons."""

    def __init__(self, queue: Queue, *, auth: str | None = None, read_only: bool = False) -> None:
        if not isinstance(queue, Queue):
            raise TypeError(f"queue must be a workhorse.Queue, got {type(queue).__name__}")
        if not isinstance(read_only, bool):
            raise TypeError(f"read_only must be a bool, got {read_only!r}")
        self.queue = queue
        self.read_only = read_only
        self._credentials = None if auth is None else Credentials(auth)
        self._api = Api(queue, read_only=read_only)
        # The page's CSRF token: new for every Dashboard, so a restart invalidates old pages.
        self._csrf_token = secrets.token_urlsafe(32)
        self._files = _static_files()

    @property
    def has_auth(self) -> bool:
        return self._credentials is not None

    def __repr__(self) -> str:
        flags = (", auth" if self.has_auth else "") + (", read_only" if self.read_only else "")
        return f"Dashboard({self.queue!r}{flags})"

    def check_host(self, host: str) -> None:
        """InsecureBind (a ValueError) if `host` is not loopback and there are no credentials."""
        if self._credentials is None and not is_loopback(host):
            raise InsecureBind(
                f"refusing to serve the dashboard on {host} without a password: anyone who "
                "can reach it could retry and delete jobs; set WORKHORSE_WEB_PASSWORD (or "
                "--auth USER:PASSWORD / auth=...) or bind 127.0.0.1"
            )

    # -- the app ----------------------------------------------------------------------------

    def __call__(self, request: Request) -> Response:
        """Answer one request (the path is below the dashboard's mount point)."""
        is_api = request.path == "/api" or request.path.startswith("/api/")
        if self._credentials is not None:
            if not self._credentials.check(request.headers.get("Authorization")):
                return self._error(
                    401,
                    "authentication required",
                    is_api,
                    [("WWW-Authenticate", 'Basic realm="workhorse", charset="UTF-8"')],
                )
        elif not is_loopback_host_header(request.headers.get("Host")):
            # No credentials: loopback only, and only by a loopback name (DNS rebinding).
            return self._error(403, "this dashboard answers only to a loopback Host", is_api)
        method = request.method
        if method in ("POST", "DELETE"):
            refused = self._refuse_change(request)
            if refused is not None:
                return self._error(403, refused, is_api)
        elif method not in ("GET", "HEAD"):
            return self._error(405, f"{method} is not allowed", is_api, [("Allow", "GET, HEAD")])
        if is_api:
            return self._answer_api(request)
        if method not in ("GET", "HEAD"):
            return self._error(405, f"{method} is not allowed", False, [("Allow", "GET, HEAD")])
        return self._static(request.path)

    def _refuse_change(self, request: Request) -> str | None:
        """Why a POST or DELETE is refused, or None to go ahead."""
        reason = cross_site_reason(request.headers)
        if reason is not None:
            return reason
        if self.read_only:
            return "the dashboard is read-only"
        if not csrf_ok(request.headers, self._csrf_token):
            return "missing or wrong CSRF token (X-CSRF-Token): reload the dashboard"
        return None

    def _answer_api(self, request: Request) -> Response:
        try:
            payload = self._api.handle(
                request.method, request.path[len("/api") :], request.query, request.body
            )
        except ApiError as exc:
            extra = [("Allow", exc.allow)] if exc.allow else []
            return self._error(exc.status, exc.message, True, extra)
        except QueueError as exc:
            return self._error(503, f"queue unreachable: {exc}", True)
        except Exception:  # noqa: BLE001 - one failing call must not end the server
            logger.exception("dashboard %s %s failed", request.method, request.path)
            return self._error(500, "internal error (logged by the dashboard)", True)
        return self._json(200, payload)

    def _static(self, path: str) -> Response:
        if path in ("/", "/index.html"):
            page = self._files["index.html"].decode()
            page = page.replace("{{csrf_token}}", html.escape(self._csrf_token))
            page = page.replace("{{read_only}}", "true" if self.read_only else "false")
            return self._respond(200, _TYPES[".html"], page.encode(), [])
        name = path[len("/static/") :] if path.startswith("/static/") else ""
        data = self._files.get(name) if "/" not in name else None
        if data is None or name == "index.html":
            return self._error(404, "not found", False)
        suffix = name[name.rfind(".") :]
        return self._respond(200, _TYPES.get(suffix, "application/octet-stream"), data, [])

    # -- answers ----------------------------------------------------------------------------

    @staticmethod
    def _respond(
        status: int, content_type: str, body: bytes, extra: list[tuple[str, str]]
    ) -> Response:
        headers = [*SECURITY_HEADERS, ("Cache-Control", "no-store"), *extra]
        return Response(status, content_type, body, headers)

    def _json(
        self, status: int, payload: Any, extra: list[tuple[str, str]] | None = None
    ) -> Response:
        body = json.dumps(payload, separators=(",", ":"), default=str).encode()
        return self._respond(status, "application/json", body, extra or [])

    def _error(
        self,
        status: int,
        message: str,
        as_json: bool,
        extra: list[tuple[str, str]] | None = None,
    ) -> Response:
        if as_json:
            return self._json(status, {"error": message, "status": status}, extra)
        text = (message + "\n").encode()
        return self._respond(status, "text/plain; charset=utf-8", text, extra or [])
