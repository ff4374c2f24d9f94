"""The dashboard's JSON API over `queue.client`: what each /api path answers, without HTTP.

`Api.handle(method, path, query, body)` returns (status, payload) or raises `ApiError`; the
Dashboard (app.py) adds authentication, the CSRF rules and the headers. Paths (below /api):

    GET    /info  /queues  /stats  /pools  /busy  /jobs/{scheduled|retry|dead}?page=N
    POST   /dead/{id}/retry  /dead/retry-all  /{set}/delete-all  /queues/{name}/pause|unpause
    DELETE /{set}/{id}

Segments are percent-decoded (a job name may hold any character). Bad input is a 400 naming the
problem, an unknown path or id a 404, a known path with another method a 405.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from workhorse.queue import Queue
from workhorse.queue.client import PER_PAGE

__all__ = ["Api", "ApiError", "redact_url"]

SETS = ("scheduled", "retry", "dead")
# page * PER_PAGE must stay far inside the core's integers.
MAX_PAGE = 1_000_000

Payload = dict[str, Any]
Handler = Callable[[dict[str, str]], Payload]


class ApiError(Exception):
    """An answer other than 200: its status and a message naming the problem."""

    def __init__(self, status: int, message: str, allow: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.allow = allow  # for a 405: the methods the path takes


def redact_url(url: str) -> str:
    """The queue URL without its password: redis://:***@host:6379/0."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _job(job: Any) -> Payload:
    return dict(job._asdict())


class Api:
    """The /api paths of one queue's dashboard."""

    def __init__(self, queue: Queue, *, read_only: bool = False) -> None:
        self._queue = queue
        self._client = queue.client
        self._read_only = read_only

    def handle(self, method: str, path: str, query: str, body: bytes) -> Payload:
        """Answer one request to `path` (below /api, percent-encoded); raises ApiError."""
        try:
            segments = [unquote(s, errors="strict") for s in path.strip("/").split("/")]
        except UnicodeDecodeError:
            raise ApiError(400, f"path is not percent-encoded UTF-8: /api{path}") from None
        if method == "HEAD":
            method = "GET"
        params = self._params(query)
        route, allow = self._route(method, segments)
        if route is None:
            if allow:
                raise ApiError(405, f"{method} is not allowed on /api{path}", allow=allow)
            raise ApiError(404, f"no such API path: /api{path}")
        if method == "GET":
            return route(params)
        if body.strip():
            raise ApiError(400, f"{method} /api{path} takes no body")
        if params:
            raise ApiError(400, f"{method} /api{path} takes no query parameters")
        return route(params)

    @staticmethod
    def _params(query: str) -> dict[str, str]:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
        except ValueError:
            raise ApiError(400, f"malformed query string: {query!r}") from None
        params: dict[str, str] = {}
        for key, value in pairs:
            if key in params:
                raise ApiError(400, f"query parameter {key!r} is given twice")
            params[key] = value
        return params

    # -- routing ----------------------------------------------------------------------------

    def _route(self, method: str, seg: list[str]) -> tuple[Handler | None, str]:
        """(the handler for method, or None; the methods the path takes, "" if unknown)."""
        table: dict[str, Handler] = {}
        n = len(seg)
        if n == 1 and seg[0] in ("info", "queues", "stats", "pools", "busy"):
            table["GET"] = getattr(self, f"_get_{seg[0]}")
        elif n == 2 and seg[0] == "jobs" and seg[1] in SETS:
            table["GET"] = lambda params: self._get_jobs(seg[1], params)
        elif n == 2 and seg[0] == "jobs":
            raise ApiError(404, f"no such set {seg[1]!r}: one of {', '.join(SETS)}")
        elif n == 2 and seg[0] == "dead" and seg[1] == "retry-all":
            table["POST"] = lambda params: {"retried": self._client.retry_all_dead_jobs()}
        elif n == 2 and seg[0] in SETS and seg[1] == "delete-all":
            table["POST"] = lambda params: {"deleted": self._delete_all(seg[0])}
        elif n == 2 and seg[0] in SETS and seg[1]:
            table["DELETE"] = lambda params: self._delete(seg[0], seg[1])
        elif n == 3 and seg[0] == "dead" and seg[1] and seg[2] == "retry":
            table["POST"] = lambda params: self._retry(seg[1])
        elif n == 3 and seg[0] == "queues" and seg[1] and seg[2] in ("pause", "unpause"):
            table["POST"] = lambda params: self._pause(seg[1], seg[2] == "pause")
        return table.get(method), ", ".join(sorted(table))

    @staticmethod
    def _no_params(params: dict[str, str]) -> None:
        if params:
            raise ApiError(400, f"unknown query parameter {next(iter(params))!r}")

    # -- reading ----------------------------------------------------------------------------

    def _get_info(self, params: dict[str, str]) -> Payload:
        from workhorse import __version__

        self._no_params(params)
        return {
            "version": __version__,
            "url": redact_url(self._queue.url),
            "namespace": self._queue.namespace,
            "read_only": self._read_only,
            "per_page": PER_PAGE,
        }

    def _get_queues(self, params: dict[str, str]) -> Payload:
        self._no_params(params)
        queues = sorted(self._client.queues(), key=lambda q: q.name)
        return {"queues": [dataclasses.asdict(q) for q in queues]}

    def _get_stats(self, params: dict[str, str]) -> Payload:
        self._no_params(params)
        # The page turns two samples into rates; `time` is when this one was read.
        return {**self._client.stats(), "time": time.time()}

    def _get_pools(self, params: dict[str, str]) -> Payload:
        self._no_params(params)
        pools = sorted(self._client.worker_pools(), key=lambda p: (p.host, p.started_at))
        return {"pools": [dataclasses.asdict(p) for p in pools]}

    def _get_busy(self, params: dict[str, str]) -> Payload:
        self._no_params(params)
        busy = sorted(self._client.busy_workers(), key=lambda b: b.started_at)
        return {"busy": [dataclasses.asdict(b) for b in busy]}

    def _get_jobs(self, which: str, params: dict[str, str]) -> Payload:
        raw = params.pop("page", "1")
        self._no_params(params)
        try:
            page = int(raw)
        except ValueError:
            raise ApiError(400, f"page must be a whole number, got {raw!r}") from None
        if not 1 <= page <= MAX_PAGE:
            raise ApiError(400, f"page must be in 1..{MAX_PAGE}, got {page}")
        fetch = {
            "scheduled": self._client.scheduled_jobs,
            "retry": self._client.retry_jobs,
            "dead": self._client.dead_jobs,
        }[which]
        got = fetch(page)
        return {
            "set": which,
            "page": page,
            "per_page": PER_PAGE,
            "pages": max(1, math.ceil(got.total / PER_PAGE)),
            "total": got.total,
            "jobs": [_job(j) for j in got.jobs],
        }

    # -- acting -----------------------------------------------------------------------------

    def _retry(self, job_id: str) -> Payload:
        if not self._client.retry_dead_job(job_id):
            raise ApiError(404, f"no dead job with id {job_id!r}")
        return {"retried": 1}

    def _delete(self, which: str, job_id: str) -> Payload:
        delete = {
            "scheduled": self._client.delete_scheduled_job,
            "retry": self._client.delete_retry_job,
            "dead": self._client.delete_dead_job,
        }[which]
        if not delete(job_id):
            raise ApiError(404, f"no {which} job with id {job_id!r}")
        return {"deleted": 1}

    def _delete_all(self, which: str) -> int:
        delete_all = {
            "scheduled": self._client.delete_all_scheduled_jobs,
            "retry": self._client.delete_all_retry_jobs,
            "dead": self._client.delete_all_dead_jobs,
        }[which]
        return delete_all()

    def _pause(self, name: str, paused: bool) -> Payload:
        if paused:
            self._client.pause(name)
        else:
            self._client.unpause(name)
        return {"name": name, "paused": paused}
