"""The dashboard's JSON API and its guards, over a real socket, on memory:// and a redis-server.

Every endpoint and error path of /api, then the security rules: credentials, the loopback-only
default (Python API and `workhorse web`), cross-site and CSRF refusals, read-only, headers.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis_server import REDIS_SERVER, RedisServer
from support import poll_until

import workhorse as wh
from workhorse.server import serve
from workhorse.web import Dashboard, InsecureBind, serve_dashboard
from workhorse.web.api import redact_url
from workhorse.web.security import Credentials, is_loopback, is_loopback_host_header

pytestmark = pytest.mark.timeout(60)

SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin"}

# Handlers that fail on purpose log through this one, which says nothing.
_quiet = logging.getLogger("test_web_api.quiet")
_quiet.disabled = True


class Answer:
    """One HTTP answer: status, headers, body, and the body as JSON when it is JSON."""

    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self) -> Any:
        assert self.headers["Content-Type"] == "application/json", self.headers["Content-Type"]
        return json.loads(self.body)

    @property
    def error(self) -> str:
        return str(self.json["error"])

    def __repr__(self) -> str:
        return f"Answer({self.status}, {self.body[:200]!r})"


def call(
    url: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> Answer:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return Answer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, error.headers, error.read())


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class Dash:
    """A dashboard served on a free loopback port for one test, and its queue."""

    def __init__(self, queue: wh.Queue, **kwargs: Any) -> None:
        self.queue = queue
        self.server = serve_dashboard(queue, port=0, **kwargs)
        self.url = self.server.url
        self.headers: dict[str, str] = {}  # sent with every call (credentials)

    def get(self, path: str, headers: dict[str, str] | None = None) -> Answer:
        return call(self.url + path, "GET", {**self.headers, **(headers or {})})

    def csrf_token(self) -> str:
        page = self.get("/").body.decode()
        found = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
        assert found, page
        return found.group(1)

    def change(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> Answer:
        """A POST or DELETE as the page sends it (its CSRF token), unless headers say else."""
        sent = {**self.headers, "X-CSRF-Token": self.csrf_token(), **(headers or {})}
        return call(self.url + path, method, sent, data)


@pytest.fixture
def make_dash() -> Iterator[Callable[..., Dash]]:
    made: list[Dash] = []

    def make(queue: wh.Queue, **kwargs: Any) -> Dash:
        dash = Dash(queue, **kwargs)
        made.append(dash)
        return dash

    yield make
    for dash in made:
        dash.server.close()


@pytest.fixture
def dash(make_queue: Callable[..., wh.Queue], make_dash: Callable[..., Dash]) -> Dash:
    """A dashboard on a fresh queue, once on memory:// and once on the redis-server."""
    return make_dash(make_queue())


@pytest.fixture
def mem_dash(make_dash: Callable[..., Dash]) -> Dash:
    """A dashboard on memory://, for the rules of the HTTP layer (the backend is not involved)."""
    return make_dash(wh.Queue.from_url("memory://"))


def _fill(
    queue: wh.Queue, n: int, name: str, handler: Any, which: str, **options: Any
) -> list[str]:
    """Ids of n jobs of `name` that a worker running `handler` left in the `which` set."""
    worker = wh.Worker(queue=queue, concurrency=4, grace=1.0, logger=_quiet)
    worker.handler(name, **options)(handler)
    jobs = queue.enqueue_many([(name, {"i": i}) for i in range(n)])
    page = getattr(queue.client, f"{which}_jobs")
    try:
        assert worker.drain(10)
        assert poll_until(lambda: page().total == n, timeout=10)
    finally:
        worker.stop(3)
    return [job.id for job in jobs if job is not None]


def make_dead(queue: wh.Queue, n: int, name: str = "doomed") -> list[str]:
    """Ids of n jobs of `name` put in the dead set by a worker (Result.dead)."""
    return _fill(queue, n, name, lambda job: wh.Result.dead(f"reason {job.args['i']}"), "dead")


def make_retry(queue: wh.Queue, n: int, name: str = "flaky") -> list[str]:
    """Ids of n jobs of `name` waiting in the retry set for a minute."""
    return _fill(queue, n, name, lambda job: 1 / 0, "retry", backoff=lambda job: 60)


def by_name(dash: Dash) -> dict[str, dict[str, Any]]:
    return {q["name"]: q for q in dash.get("/api/queues").json["queues"]}


# -- reading --------------------------------------------------------------------------------------


def test_queues_lists_each_name_with_its_counts(dash: Dash) -> None:
    make_dead(dash.queue, 2)
    dash.queue.enqueue_many([("waiting", {"i": i}) for i in range(3)])
    dash.queue.enqueue_in("waiting", 60)
    dash.queue.client.pause("waiting")
    answer = dash.get("/api/queues")
    assert answer.status == 200
    queues = by_name(dash)
    assert [q["name"] for q in answer.json["queues"]] == ["doomed", "waiting"]  # sorted
    w = queues["waiting"]
    assert (w["ready"], w["scheduled"], w["retry"], w["dead"], w["running"]) == (3, 1, 0, 0, 0)
    assert w["paused"] is True and w["latency"] >= 0
    assert (queues["doomed"]["dead"], queues["doomed"]["paused"]) == (2, False)


def test_stats_are_the_client_counters_and_the_time_they_were_read(dash: Dash) -> None:
    make_dead(dash.queue, 1)
    stats = dash.get("/api/stats").json
    assert set(stats) == {
        "processed", "failed", "dead", "stale_acks", "reaped", "data_losses", "time"
    }
    assert stats["processed"] >= 1 and stats["dead"] == 1
    assert abs(stats["time"] - time.time()) < 60


def test_info_names_the_queue_without_its_password(dash: Dash) -> None:
    info = dash.get("/api/info").json
    assert info == {
        "version": wh.__version__,
        "url": dash.queue.url,
        "namespace": dash.queue.namespace,
        "read_only": False,
        "per_page": 20,
    }
    assert redact_url("redis://:s3cret@db:6379/0") == "redis://:***@db:6379/0"
    assert redact_url("rediss://app:s3cret@db/1?x=1") == "rediss://app:***@db/1?x=1"
    assert redact_url("redis://db:6379/0") == "redis://db:6379/0"


def test_pools_and_busy_show_a_running_worker_and_its_checkin(dash: Dash) -> None:
    started, release = threading.Event(), threading.Event()
    worker = wh.Worker(queue=dash.queue, concurrency=2, grace=1.0, name="web-test")

    @worker.handler("long")
    def long(job: wh.QueueJob) -> None:
        job.checkin("step 2 of 5")
        started.set()
        release.wait(10)

    worker.start()
    try:
        job = dash.queue.enqueue("long", {"n": 1})
        assert started.wait(10)
        assert poll_until(lambda: dash.get("/api/pools").json["pools"], timeout=10)
        (pool,) = dash.get("/api/pools").json["pools"]
        assert pool["pid"] == os.getpid() and pool["names"] == ["long"]
        assert pool["concurrency"] == 2 and "web-test" in pool["worker_id"]
        assert pool["heartbeat_at"] >= pool["started_at"] > 0
        (busy,) = dash.get("/api/busy").json["busy"]
        assert (busy["job_id"], busy["name"], busy["checkin"]) == (job.id, "long", "step 2 of 5")
        assert busy["worker_id"] == pool["worker_id"] and busy["checkin_at"] >= busy["started_at"]
    finally:
        release.set()
        worker.stop(5)
    assert poll_until(lambda: dash.get("/api/busy").json["busy"] == [], timeout=10)


def test_job_pages_are_paged_twenty_at_a_time(dash: Dash) -> None:
    dash.queue.enqueue_many([("later", {"i": i}) for i in range(25)])
    first = dash.get("/api/jobs/scheduled").json
    assert (first["set"], first["page"], first["per_page"]) == ("scheduled", 1, 20)
    assert (first["total"], first["pages"], len(first["jobs"])) == (0, 1, 0)  # they are ready
    for i in range(25):
        dash.queue.enqueue_in("later", 60 + i, {"i": i})
    one, two, three = (dash.get(f"/api/jobs/scheduled?page={n}").json for n in (1, 2, 3))
    assert (one["total"], one["pages"], len(one["jobs"]), len(two["jobs"])) == (25, 2, 20, 5)
    assert three["jobs"] == [] and three["page"] == 3
    seen = [j["args"]["i"] for j in one["jobs"] + two["jobs"]]
    assert sorted(seen) == list(range(25))
    job = one["jobs"][0]
    assert set(job) >= {"id", "name", "args", "enqueued_at", "run_at", "fails", "last_error"}


def test_retry_and_dead_pages_carry_errors_and_reasons(dash: Dash) -> None:
    make_retry(dash.queue, 2)
    make_dead(dash.queue, 3)
    retry = dash.get("/api/jobs/retry").json
    assert retry["total"] == 2
    assert all(j["fails"] == 1 and "ZeroDivisionError" in j["last_error"] for j in retry["jobs"])
    dead = dash.get("/api/jobs/dead?page=1").json
    assert dead["total"] == 3
    assert sorted(j["reason"] for j in dead["jobs"]) == ["reason 0", "reason 1", "reason 2"]
    assert all(j["died_at"] > 0 for j in dead["jobs"])


# -- acting ---------------------------------------------------------------------------------------


def test_retry_one_dead_job_then_all(dash: Dash) -> None:
    ids = make_dead(dash.queue, 3)
    answer = dash.change("POST", f"/api/dead/{ids[0]}/retry")
    assert (answer.status, answer.json) == (200, {"retried": 1})
    assert by_name(dash)["doomed"]["ready"] == 1
    missing = dash.change("POST", f"/api/dead/{ids[0]}/retry")  # no longer dead
    assert missing.status == 404 and ids[0] in missing.error
    assert dash.change("POST", "/api/dead/retry-all").json == {"retried": 2}
    queues = by_name(dash)
    assert (queues["doomed"]["ready"], queues["doomed"]["dead"]) == (3, 0)


def test_delete_one_job_of_each_set_then_all(dash: Dash) -> None:
    dead = make_dead(dash.queue, 2)
    retry = make_retry(dash.queue, 2)
    scheduled = [dash.queue.enqueue_in("later", 60).id for _ in range(2)]
    for which, ids in (("dead", dead), ("retry", retry), ("scheduled", scheduled)):
        assert dash.change("DELETE", f"/api/{which}/{ids[0]}").json == {"deleted": 1}
        gone = dash.change("DELETE", f"/api/{which}/{ids[0]}")
        assert gone.status == 404 and f"no {which} job with id" in gone.error
        assert dash.get(f"/api/jobs/{which}").json["total"] == 1
        assert dash.change("POST", f"/api/{which}/delete-all").json == {"deleted": 1}
        assert dash.get(f"/api/jobs/{which}").json["total"] == 0


def test_pause_and_unpause_a_name(dash: Dash) -> None:
    dash.queue.enqueue("mail")
    answer = dash.change("POST", "/api/queues/mail/pause")
    assert answer.json == {"name": "mail", "paused": True}
    assert by_name(dash)["mail"]["paused"] is True
    assert dash.change("POST", "/api/queues/mail/unpause").json == {"name": "mail", "paused": False}
    assert by_name(dash)["mail"]["paused"] is False


def test_names_and_ids_are_percent_decoded(dash: Dash) -> None:
    name = "reports/daily ü?"
    dash.queue.enqueue(name)
    quoted = urllib.request.quote(name, safe="")
    assert dash.change("POST", f"/api/queues/{quoted}/pause").json["name"] == name
    assert by_name(dash)[name]["paused"] is True


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status", "text"),
    [
        ("/api/jobs/dead?page=abc", 400, "page must be a whole number"),
        ("/api/jobs/dead?page=0", 400, "page must be in 1..1000000"),
        ("/api/jobs/dead?page=-3", 400, "page must be in"),
        ("/api/jobs/dead?page=99999999999999999999", 400, "page must be in"),
        ("/api/jobs/dead?page=1&page=2", 400, "given twice"),
        ("/api/jobs/dead?sort=name", 400, "unknown query parameter 'sort'"),
        ("/api/jobs/dead?page", 400, "malformed query string"),
        ("/api/jobs/dead?page=", 400, "page must be a whole number"),
        ("/api/jobs/dead?=&&", 400, "malformed query"),
        ("/api/queues?x=1", 400, "unknown query parameter 'x'"),
        ("/api/jobs/zombies", 404, "no such set 'zombies'"),
        ("/api/nope", 404, "no such API path"),
        ("/api", 404, "no such API path"),
        ("/api/queues/mail", 404, "no such API path"),
        ("/api/dead/%ff%fe/retry", 400, "not percent-encoded UTF-8"),
    ],
)
def test_bad_reads_are_json_errors_naming_the_problem(
    mem_dash: Dash, path: str, status: int, text: str
) -> None:
    answer = mem_dash.get(path)
    assert answer.status == status, answer
    assert text in answer.error and answer.json["status"] == status


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/api/dead/retry-all", "POST"),
        ("GET", "/api/queues/mail/pause", "POST"),
        ("DELETE", "/api/dead/delete-all", "POST"),
        ("POST", "/api/queues", "GET"),
        ("POST", "/api/dead/some-id", "DELETE"),
        ("DELETE", "/api/dead/x/retry", "POST"),
    ],
)
def test_a_known_path_with_another_method_is_405(
    mem_dash: Dash, method: str, path: str, allow: str
) -> None:
    answer = mem_dash.change(method, path) if method != "GET" else mem_dash.get(path)
    assert (answer.status, answer.headers["Allow"]) == (405, allow), answer


def test_get_never_changes_anything(mem_dash: Dash) -> None:
    ids = make_dead(mem_dash.queue, 1)
    for path in ("/api/dead/retry-all", f"/api/dead/{ids[0]}/retry", "/api/dead/delete-all"):
        assert mem_dash.get(path).status == 405
        assert call(mem_dash.url + path, "HEAD").status == 405
    assert mem_dash.queue.client.dead_jobs().total == 1


def test_changes_take_no_body_and_no_query(mem_dash: Dash) -> None:
    make_dead(mem_dash.queue, 2)
    answer = mem_dash.change("POST", "/api/dead/retry-all", data=b'{"id": "only-this-one"}')
    assert answer.status == 400 and "takes no body" in answer.error
    answer = mem_dash.change("POST", "/api/dead/retry-all?id=x")
    assert answer.status == 400 and "no query parameters" in answer.error
    assert mem_dash.queue.client.dead_jobs().total == 2  # nothing was retried


def test_an_unreachable_queue_is_503(make_dash: Callable[..., Dash], tmp_path: Any) -> None:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    redis = RedisServer(str(tmp_path))
    try:
        dash = make_dash(wh.Queue.from_url(redis.url, namespace="gone"))
        assert dash.get("/api/queues").status == 200
        redis.kill()
        for path in ("/api/queues", "/api/stats", "/api/jobs/dead", "/api/pools", "/api/busy"):
            answer = dash.get(path)
            assert answer.status == 503, answer
            assert answer.error.startswith("queue unreachable:")
        answer = dash.change("POST", "/api/dead/retry-all")
        assert answer.status == 503
        assert dash.get("/").status == 200  # the page itself still loads and shows the error
    finally:
        redis.kill()


# -- the page and its files -------------------------------------------------------------------


def test_the_page_has_no_inline_script_or_style_and_its_files_are_served(mem_dash: Dash) -> None:
    page = mem_dash.get("/")
    assert page.status == 200 and page.headers["Content-Type"] == "text/html; charset=utf-8"
    html = page.body.decode()
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts and all("src=" in s for s in scripts)
    assert re.search(r"<script\b[^>]*>\s*[^<\s]", html) is None  # nothing between the tags
    assert "<style" not in html and " style=" not in html and not re.search(r" on\w+=", html)
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css"),
                       ("favicon.svg", "image/svg+xml")):
        answer = mem_dash.get(f"/static/{name}")
        assert answer.status == 200 and answer.headers["Content-Type"].startswith(kind), name
    assert mem_dash.get("/index.html").status == 200


@pytest.mark.parametrize(
    "path",
    ["/static/nope.js", "/static/../app.py", "/static/%2e%2e/app.py", "/static/", "/other",
     "/static/index.html"],
)
def test_anything_else_is_404(mem_dash: Dash, path: str) -> None:
    assert mem_dash.get(path).status == 404


def test_security_headers_are_on_every_answer(mem_dash: Dash) -> None:
    answers = [
        mem_dash.get("/"),
        mem_dash.get("/static/app.js"),
        mem_dash.get("/api/queues"),
        mem_dash.get("/api/nope"),
        mem_dash.get("/missing"),
        call(mem_dash.url + "/api/dead/retry-all", "POST"),  # refused: no CSRF token
    ]
    for answer in answers:
        csp = answer.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp, answer
        assert "frame-ancestors 'none'" in csp and "'unsafe-inline'" not in csp
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["Referrer-Policy"] == "no-referrer"
        assert answer.headers["Cache-Control"] == "no-store"
        assert "Python" not in answer.headers["Server"]


# -- CSRF and cross-site requests ----------------------------------------------------------------


def test_a_change_needs_the_csrf_token_or_a_same_origin_fetch(mem_dash: Dash) -> None:
    mem_dash.queue.enqueue("mail")
    url = mem_dash.url + "/api/queues/mail/pause"
    missing = call(url, "POST")
    assert missing.status == 403 and "CSRF" in missing.error
    wrong = call(url, "POST", {"X-CSRF-Token": "guess"})
    assert wrong.status == 403 and "CSRF" in wrong.error
    assert call(url, "POST", {"Sec-Fetch-Site": "none"}).status == 403  # typed, not the page
    assert not by_name(mem_dash)["mail"]["paused"]
    assert call(url, "POST", {"X-CSRF-Token": mem_dash.csrf_token()}).status == 200
    assert call(mem_dash.url + "/api/queues/mail/unpause", "POST", SAME_ORIGIN).status == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:1"},  # the same host on another port is another origin
        {"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"},
    ],
)
def test_cross_site_changes_are_refused_even_with_the_token(
    mem_dash: Dash, headers: dict[str, str]
) -> None:
    ids = make_dead(mem_dash.queue, 1)
    for method, path in (("POST", "/api/dead/retry-all"), ("DELETE", f"/api/dead/{ids[0]}"),
                         ("POST", "/api/queues/doomed/pause")):
        answer = mem_dash.change(method, path, headers)
        assert answer.status == 403 and "refused" in answer.error, answer
    assert mem_dash.queue.client.dead_jobs().total == 1
    assert not by_name(mem_dash)["doomed"]["paused"]


def test_a_same_origin_origin_header_is_accepted(mem_dash: Dash) -> None:
    host = mem_dash.url.removeprefix("http://")
    answer = mem_dash.change("POST", "/api/dead/retry-all", {"Origin": f"http://{host}"})
    assert answer.status == 200, answer


def test_without_credentials_only_a_loopback_host_header_is_answered(mem_dash: Dash) -> None:
    port = mem_dash.server.port
    loopback = ("localhost", "127.0.0.1", "[::1]", "app.localhost")
    for host in (f"{name}:{port}" for name in loopback):
        assert mem_dash.get("/api/queues", {"Host": host}).status == 200, host
    for host in (f"evil.example:{port}", "rebound.example", f"10.0.0.1:{port}", ""):
        answer = mem_dash.get("/", {"Host": host})
        assert answer.status == 403 and b"loopback Host" in answer.body, host


# -- credentials ----------------------------------------------------------------------------------


def test_user_and_password_guard_every_path(make_dash: Callable[..., Dash]) -> None:
    dash = make_dash(wh.Queue.from_url("memory://"), auth="admin:s3cret:with:colons")
    for path in ("/", "/static/app.js", "/api/queues"):
        answer = dash.get(path)
        assert answer.status == 401, path
        assert answer.headers["WWW-Authenticate"].startswith('Basic realm="workhorse"')
    assert dash.get("/api/queues", basic("admin", "wrong")).status == 401
    assert dash.get("/api/queues", basic("root", "s3cret:with:colons")).status == 401
    assert dash.get("/api/queues", {"Authorization": "Bearer s3cret:with:colons"}).status == 401
    assert dash.get("/api/queues", {"Authorization": "Basic !!!"}).status == 401
    assert dash.get("/api/queues", {"Authorization": "Digest x"}).status == 401
    assert dash.get("/api/queues", basic("admin", "s3cret:with:colons")).status == 200
    # With credentials the Host is not checked: it may sit behind a proxy with another name.
    dash.headers = basic("admin", "s3cret:with:colons")
    assert dash.get("/api/queues", {"Host": "dashboard.example"}).status == 200
    assert dash.change("POST", "/api/queues/x/pause").status == 200
    assert call(dash.url + "/api/queues/x/pause", "POST", dash.headers).status == 403  # CSRF


def test_a_token_is_a_bearer_or_the_basic_password_of_any_user(
    make_dash: Callable[..., Dash],
) -> None:
    dash = make_dash(wh.Queue.from_url("memory://"), auth="t0ken-abc")
    assert dash.get("/api/queues").status == 401
    assert dash.get("/api/queues", {"Authorization": "Bearer t0ken-abc"}).status == 200
    assert dash.get("/api/queues", {"Authorization": "bearer  t0ken-abc "}).status == 200
    assert dash.get("/api/queues", {"Authorization": "Bearer t0ken-abd"}).status == 401
    assert dash.get("/api/queues", basic("anyone", "t0ken-abc")).status == 200
    assert dash.get("/api/queues", basic("t0ken-abc", "")).status == 401


@pytest.mark.parametrize(
    ("auth", "error"),
    [("", ValueError), ("   ", ValueError), ("user:", ValueError), (":pw", ValueError),
     (b"user:pw", TypeError), (42, TypeError)],
)
def test_bad_auth_values_are_refused(auth: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        Credentials(auth)
    with pytest.raises(error):
        Dashboard(wh.Queue.from_url("memory://"), auth=auth)


def test_credentials_never_show_in_their_repr() -> None:
    assert "s3cret" not in repr(Credentials("admin:s3cret"))
    assert "t0ken" not in repr(Credentials("t0ken"))


# -- where it may listen --------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "192.168.0.1", "8.8.8.8", ""])
def test_hosts_other_people_reach(host: str) -> None:
    assert not is_loopback(host)


def test_host_headers() -> None:
    assert is_loopback_host_header("127.0.0.1:5040") and is_loopback_host_header("[::1]:80")
    assert is_loopback_host_header("LOCALHOST") and not is_loopback_host_header(None)
    assert not is_loopback_host_header("127.0.0.1.evil.example:5040")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3"])
def test_a_non_loopback_bind_without_auth_is_refused(host: str) -> None:
    queue = wh.Queue.from_url("memory://")
    with pytest.raises(InsecureBind, match="without a password.*WORKHORSE_WEB_PASSWORD"):
        serve_dashboard(queue, host=host, port=0)
    with pytest.raises(InsecureBind):
        serve(host=host, port=0, dashboard=queue)
    with pytest.raises(ValueError):  # InsecureBind is a ValueError
        Dashboard(queue).check_host(host)
    Dashboard(queue, auth="admin:pw").check_host(host)  # with credentials it may


def test_serve_dashboard_takes_a_dashboard_or_a_queue_and_checks_its_arguments() -> None:
    queue = wh.Queue.from_url("memory://")
    with serve_dashboard(Dashboard(queue, read_only=True), port=0) as server:
        assert call(server.url + "/api/info").json["read_only"] is True
    with pytest.raises(ValueError, match="give auth and read_only to the Dashboard"):
        serve_dashboard(Dashboard(queue), port=0, read_only=True)
    with pytest.raises(TypeError):
        serve_dashboard("memory://", port=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        serve_dashboard(queue, port="5040")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Dashboard(queue, read_only="yes")  # type: ignore[arg-type]


# -- read-only ------------------------------------------------------------------------------------


def test_read_only_refuses_every_change_and_says_so_to_the_page(
    make_dash: Callable[..., Dash],
) -> None:
    dash = make_dash(wh.Queue.from_url("memory://"), read_only=True)
    ids = make_dead(dash.queue, 1)
    assert '<meta name="read-only" content="true">' in dash.get("/").body.decode()
    assert dash.get("/api/info").json["read_only"] is True
    for method, path in (("POST", "/api/dead/retry-all"), ("POST", f"/api/dead/{ids[0]}/retry"),
                         ("DELETE", f"/api/dead/{ids[0]}"), ("POST", "/api/dead/delete-all"),
                         ("POST", "/api/queues/doomed/pause")):
        answer = dash.change(method, path, SAME_ORIGIN)
        assert (answer.status, answer.error) == (403, "the dashboard is read-only"), path
    assert dash.queue.client.dead_jobs().total == 1
    assert dash.get("/api/jobs/dead").json["total"] == 1  # reading still works


# -- beside /metrics and /ready -------------------------------------------------------------------


def test_serve_mounts_the_dashboard_beside_metrics_and_ready(registry: Any) -> None:
    queue = wh.Queue.from_url("memory://")
    queue.enqueue("mail")
    with serve(port=0, registry=registry, dashboard=queue) as server:
        assert call(server.url + "/metrics").status == 200
        assert call(server.url + "/ready").body == b"OK"
        assert b'name="csrf-token"' in call(server.url + "/").body
        assert call(server.url + "/api/queues").json["queues"][0]["name"] == "mail"
        assert serve(port=server.port, registry=registry, dashboard=queue) is server
        with pytest.raises(ValueError, match="already serves"):
            serve(port=server.port, registry=registry)


def test_serve_mounts_the_dashboard_under_a_path(registry: Any) -> None:
    queue = wh.Queue.from_url("memory://")
    dashboard = Dashboard(queue, read_only=True)
    with serve(port=0, registry=registry, dashboard=dashboard, dashboard_path="/jobs/") as server:
        page = call(server.url + "/jobs")  # redirected to /jobs/
        assert page.status == 200 and b"static/app.js" in page.body
        assert call(server.url + "/jobs/static/app.js").status == 200
        assert call(server.url + "/jobs/api/info").json["read_only"] is True
        assert call(server.url + "/api/info").status == 404
        assert call(server.url + "/metrics").status == 200
    with pytest.raises(ValueError, match="dashboard_path"):
        serve(port=0, registry=registry, dashboard=queue, dashboard_path="jobs")


# -- workhorse web --------------------------------------------------------------------------------


def workhorse(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "workhorse", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def finished(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err


def one_line_error(result: tuple[int, str, str], code: int, text: str) -> None:
    returncode, _out, err = result
    assert returncode == code, result
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("workhorse: ") and text in lines[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_workhorse_web_refuses_a_public_host_without_a_password(host: str) -> None:
    result = finished(workhorse("web", "--host", host, "--port", "0"))
    one_line_error(result, 2, f"refusing to serve the dashboard on {host} without a password")
    assert "WORKHORSE_WEB_PASSWORD" in result[2]
    env = {"WORKHORSE_WEB_HOST": host}
    one_line_error(finished(workhorse("web", "--port", "0", env=env)), 2, "without a password")


@pytest.mark.parametrize(
    ("args", "env", "text"),
    [
        (["--auth", "admin:"], {}, "--auth (or WORKHORSE_WEB_PASSWORD): auth must be"),
        ([], {"WORKHORSE_WEB_PASSWORD": ":x"}, "auth must be USER:PASSWORD"),
        (["--port", "70000"], {}, "--port must be in 0..65535"),
        ([], {"WORKHORSE_WEB_PORT": "web"}, "WORKHORSE_WEB_PORT must be an integer"),
        ([], {"WORKHORSE_WEB_READ_ONLY": "maybe"}, "WORKHORSE_WEB_READ_ONLY must be 1 or 0"),
    ],
)
def test_workhorse_web_mistakes_are_one_line_and_exit_2(
    args: list[str], env: dict[str, str], text: str
) -> None:
    one_line_error(finished(workhorse("web", *args, env=env)), 2, text)


def test_workhorse_web_on_a_port_in_use_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        one_line_error(finished(workhorse("web", "--port", str(port))), 2, "cannot listen on")


def test_workhorse_web_on_an_unreachable_queue_is_one_line_and_exit_1() -> None:
    result = finished(workhorse("web", "--url", "redis://127.0.0.1:1/0", "--port", "0"))
    assert result[0] == 1 and "Traceback" not in result[2], result


def start_web(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    """`workhorse web ... --port 0` running, and the URL it printed."""
    proc = workhorse("web", "--port", "0", *args, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = re.search(r"on (http://\S+)/ ", line)
    assert found, (line, proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
    return proc, found.group(1)


def stop_web(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0


def test_workhorse_web_serves_the_queue_until_sigterm(redis_server: Any) -> None:
    ns = f"webcli{os.getpid()}"
    wh.Queue.from_url(redis_server.url, namespace=ns).enqueue("from_cli", {"n": 1})
    proc, url = start_web("--url", redis_server.url, "--namespace", ns)
    try:
        assert call(url + "/api/info").json["namespace"] == ns
        (queue,) = call(url + "/api/queues").json["queues"]
        assert (queue["name"], queue["ready"]) == ("from_cli", 1)
        assert call(url + "/api/queues/from_cli/pause", "POST", SAME_ORIGIN).status == 200
    finally:
        stop_web(proc)


def test_workhorse_web_takes_its_password_and_read_only_from_the_environment() -> None:
    env = {"WORKHORSE_WEB_PASSWORD": "admin:pw", "WORKHORSE_WEB_READ_ONLY": "1"}
    proc, url = start_web(env=env)
    try:
        assert call(url + "/api/info").status == 401
        info = call(url + "/api/info", headers=basic("admin", "pw")).json
        assert info["read_only"] is True
        headers = {**basic("admin", "pw"), **SAME_ORIGIN}
        assert call(url + "/api/queues/x/pause", "POST", headers).status == 403
    finally:
        stop_web(proc)


def test_workhorse_web_has_help() -> None:
    code, out, _err = finished(workhorse("web", "--help"))
    assert code == 0 and "usage: workhorse web" in out
    for option in ("--host", "--port", "--auth", "--read-only", "--url", "--namespace"):
        assert option in out
