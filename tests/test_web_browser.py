"""The dashboard in a real browser (Debian's chromium, driven by Playwright) against a real
worker and a real redis-server: every page loads without a script or CSP error, a job goes from
ready to done, the buttons retry a dead job and pause a queue, the chart draws, and a page on
another site can neither change anything nor read the dashboard. Waits are Playwright's
expectations with generous timeouts; nothing sleeps to assert.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from typing import Any

import pytest

import workhorse as wh
from workhorse.web import serve_dashboard

CHROMIUM = "/usr/bin/chromium"

if not os.path.exists(CHROMIUM):
    pytest.skip(
        f"{CHROMIUM} is missing: the browser tests need Debian's chromium (.ci/run installs it; "
        "Playwright's own browser download is not used)",
        allow_module_level=True,
    )

from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright  # noqa: E402

pytestmark = pytest.mark.timeout(90)

WAIT_MS = 20_000  # a loaded 2-core machine: every expectation gets this long
expect.set_options(timeout=WAIT_MS)

# Another site for the cross-site tests: the browser resolves it to loopback, nothing else does.
EVIL = "evil.test"

_namespaces = count(1)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=[f"--host-resolver-rules=MAP {EVIL} 127.0.0.1"]
        )
        yield browser
        browser.close()


class Site:
    """A dashboard on a redis-server namespace of its own, its queue and a page to drive it."""

    def __init__(self, queue: wh.Queue, url: str, page: Page) -> None:
        self.queue = queue
        self.url = url
        self.page = page
        self.problems: list[str] = []  # console errors and uncaught exceptions of the page
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(f"pageerror: {exc}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.problems.append(f"console: {message.text}")

    def open(self, route: str) -> None:
        self.page.goto(f"{self.url}/#/{route}")
        expect(self.page.locator(f"main[data-page={route}]")).to_be_visible()

    def row(self, kind: str, value: str) -> Any:
        return self.page.locator(f"tr[data-{kind}='{value}']")

    def cell(self, queue: str, column: str) -> Any:
        return self.row("queue", queue).locator(f"td[data-col={column}]")


@pytest.fixture
def make_site(
    browser: Browser, redis_server: Any
) -> Iterator[Callable[..., Site]]:
    made: list[tuple[Site, Any, Any]] = []

    def make(auth: str | None = None, read_only: bool = False, **context: Any) -> Site:
        namespace = f"web{os.getpid()}x{next(_namespaces)}"
        queue = wh.Queue.from_url(redis_server.url, namespace=namespace)
        server = serve_dashboard(queue, port=0, auth=auth, read_only=read_only)
        ctx = browser.new_context(viewport={"width": 1280, "height": 800}, **context)
        site = Site(queue, server.url, ctx.new_page())
        made.append((site, server, ctx))
        return site

    yield make
    for _site, server, ctx in made:
        ctx.close()
        server.close()


@pytest.fixture
def site(make_site: Callable[..., Site]) -> Iterator[Site]:
    """A dashboard without credentials whose page must finish without a single console error
    (a CSP violation, a failed script, a refused call all show up there)."""
    site = make_site()
    yield site
    assert site.problems == []


def off_the_loop(fn: Callable[[], object]) -> None:
    """Run fn in a thread of its own. Playwright's sync API keeps an asyncio loop running in
    this thread, and a Worker started or stopped here would take it for its own loop."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    if errors:
        raise errors[0]


class Workers:
    """Workers on a queue, started and stopped off Playwright's loop (see off_the_loop)."""

    def __init__(self) -> None:
        self.started: list[wh.Worker] = []

    def __call__(self, queue: wh.Queue, **kwargs: Any) -> wh.Worker:
        kwargs.setdefault("concurrency", 2)
        kwargs.setdefault("grace", 1.0)
        return wh.Worker(queue=queue, **kwargs)

    def start(self, worker: wh.Worker) -> None:
        self.started.append(worker)
        off_the_loop(worker.start)

    def stop_all(self) -> None:
        for worker in self.started:
            off_the_loop(lambda worker=worker: worker.stop(timeout=3))


@pytest.fixture
def make_worker() -> Iterator[Workers]:
    workers = Workers()
    yield workers
    workers.stop_all()


def test_every_page_loads_and_shows_its_data(
    site: Site, make_worker: Workers
) -> None:
    site.queue.enqueue_in("newsletter", 3600, {"issue": 7})
    worker = make_worker(site.queue, name="pages")
    worker.handler("newsletter")(lambda job: None)
    make_worker.start(worker)
    titles = {
        "queues": "Queues",
        "busy": "Busy workers",
        "workers": "Worker pools",
        "scheduled": "Scheduled jobs",
        "retry": "Retry jobs",
        "dead": "Dead jobs",
    }
    for route, title in titles.items():
        site.open(route)
        expect(site.page.locator("main h1")).to_contain_text(title)
        expect(site.page.locator(f"#nav a[data-page={route}]")).to_have_class("active")
    site.open("queues")
    expect(site.cell("newsletter", "scheduled")).to_have_text("1")
    expect(site.page.locator("#where")).to_contain_text(site.queue.namespace)
    site.open("scheduled")
    expect(site.page.locator("main tbody tr")).to_have_count(1)
    expect(site.page.locator("main tbody tr td.args")).to_have_text('{"issue":7}')
    site.open("workers")
    expect(site.page.locator("main tbody tr")).to_contain_text("newsletter")
    site.open("dead")
    expect(site.page.locator("main .empty")).to_have_text("No dead jobs.")


def test_a_job_goes_from_ready_to_running_to_done(
    site: Site, make_worker: Workers
) -> None:
    release = threading.Event()
    worker = make_worker(site.queue)

    @worker.handler("greet")
    def greet(job: wh.QueueJob) -> None:
        job.checkin("said hello to 1 of 2")
        release.wait(30)

    job = site.queue.enqueue("greet", {"to": "ada"})
    site.open("queues")
    expect(site.cell("greet", "ready")).to_have_text("1")
    expect(site.cell("greet", "running")).to_have_text("0")
    make_worker.start(worker)
    expect(site.cell("greet", "running")).to_have_text("1")
    expect(site.cell("greet", "ready")).to_have_text("0")
    expect(site.page.locator("[data-count=busy]")).to_have_text("1")
    site.open("busy")
    expect(site.row("job", job.id)).to_contain_text("said hello to 1 of 2")
    release.set()
    expect(site.page.locator("main .empty")).to_have_text("No job is running.")
    site.open("queues")
    expect(site.cell("greet", "running")).to_have_text("0")
    expect(site.page.locator("#tile-processed")).to_have_text("1")


def test_the_retry_button_brings_a_dead_job_back(
    site: Site, make_worker: Workers
) -> None:
    runs: list[int] = []
    done = threading.Event()
    worker = make_worker(site.queue)

    @worker.handler("charge")
    def charge(job: wh.QueueJob) -> wh.Result | None:
        runs.append(job.fails)
        if len(runs) == 1:
            return wh.Result.dead("card declined")
        done.set()
        return None

    make_worker.start(worker)
    job = site.queue.enqueue("charge", {"order": 42})
    site.open("dead")
    row = site.row("job", job.id)
    expect(row).to_contain_text("card declined")
    expect(site.page.locator("[data-count=dead]")).to_have_text("1")
    row.get_by_role("button", name="Retry").click()
    expect(site.page.locator("#toast")).to_contain_text(f"Retried charge ({job.id})")
    expect(row).to_have_count(0)
    expect(site.page.locator("main .empty")).to_have_text("No dead jobs.")
    assert done.wait(30), runs
    assert len(runs) == 2


def test_the_pause_button_stops_workers_claiming_a_name(
    site: Site, make_worker: Workers
) -> None:
    ran = {"slow_lane": threading.Event(), "other": threading.Event()}
    worker = make_worker(site.queue)
    for name, event in ran.items():
        worker.register(name, lambda job, event=event: event.set())
    make_worker.start(worker)
    site.queue.enqueue_in("slow_lane", 3600)  # the name shows up with nothing to run yet
    site.open("queues")
    site.row("queue", "slow_lane").get_by_role("button", name="Pause").click()
    expect(site.cell("slow_lane", "state")).to_have_text("paused")
    expect(site.page.locator("#toast")).to_contain_text("Paused slow_lane")
    assert {q.name: q.paused for q in site.queue.client.queues()}["slow_lane"]

    site.queue.enqueue("slow_lane")
    site.queue.enqueue("other")  # ready after slow_lane: a claim that takes it skipped slow_lane
    assert ran["other"].wait(30)
    assert not ran["slow_lane"].is_set()
    expect(site.cell("slow_lane", "ready")).to_have_text("1")
    expect(site.cell("slow_lane", "running")).to_have_text("0")

    site.row("queue", "slow_lane").get_by_role("button", name="Unpause").click()
    expect(site.cell("slow_lane", "state")).not_to_have_text("paused")
    assert ran["slow_lane"].wait(30)
    expect(site.cell("slow_lane", "ready")).to_have_text("0")


# Pixels of the processed series (the accent blue) drawn clearly above the chart's baseline.
RISEN_PIXELS = """
(canvas) => {
  const ctx = canvas.getContext("2d");
  const {width, height} = canvas;
  const baseline = height - 30 * (window.devicePixelRatio || 1);
  const data = ctx.getImageData(0, 0, width, baseline).data;
  let n = 0;
  for (let i = 0; i < data.length; i += 4) {
    const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
    if (a > 200 && b > 150 && r < 120 && g < 150) n++;
  }
  return n;
}
"""


def test_the_live_chart_draws_processed_jobs_per_second(
    site: Site, make_worker: Workers
) -> None:
    worker = make_worker(site.queue, concurrency=4)
    worker.handler("tick")(lambda job: None)
    make_worker.start(worker)
    site.open("queues")
    chart = site.page.locator("canvas#chart")
    site.page.wait_for_function(  # two samples drawn: a rate, zero
        "() => Number(document.getElementById('chart').dataset.points) >= 1", timeout=WAIT_MS
    )
    assert chart.evaluate(RISEN_PIXELS) == 0
    site.queue.enqueue_many([("tick", {"i": i}) for i in range(40)])
    expect(site.page.locator("#tile-processed")).to_have_text("40")
    site.page.wait_for_function(
        f"() => ({RISEN_PIXELS})(document.getElementById('chart')) > 20", timeout=WAIT_MS
    )
    assert int(chart.get_attribute("data-points") or 0) >= 2
    assert float(chart.get_attribute("data-peak") or 0) >= 1


def test_read_only_shows_no_buttons(
    make_site: Callable[..., Site], make_worker: Workers
) -> None:
    site = make_site(read_only=True)
    worker = make_worker(site.queue)
    worker.handler("doomed")(lambda job: wh.Result.dead("no"))
    make_worker.start(worker)
    job = site.queue.enqueue("doomed")
    site.open("dead")
    expect(site.row("job", job.id)).to_be_visible()
    expect(site.page.locator("#where")).to_contain_text("read-only")
    expect(site.page.locator("main button")).to_have_count(0)
    site.open("queues")
    expect(site.row("queue", "doomed")).to_be_visible()
    expect(site.page.locator("main button")).to_have_count(0)
    assert site.problems == []


# -- another site -------------------------------------------------------------------------------


class EvilSite:
    """A second web server, http://evil.test:PORT/, whose pages post to the dashboard."""

    def __init__(self, pages: dict[str, str]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = pages.get(self.path, "").encode()
                self.send_response(200 if body else 404)
                kind = "text/javascript" if self.path.endswith(".js") else "text/html"
                self.send_header("Content-Type", f"{kind}; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # the browser drops connections as it navigates away

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://{EVIL}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.1,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def evil() -> Iterator[Callable[[dict[str, str]], EvilSite]]:
    made: list[EvilSite] = []

    def make(pages: dict[str, str]) -> EvilSite:
        made.append(EvilSite(pages))
        return made[-1]

    yield make
    for site in made:
        site.close()


def test_a_form_on_another_site_cannot_change_anything(
    make_site: Callable[..., Site], evil: Callable[[dict[str, str]], EvilSite]
) -> None:
    site = make_site()
    site.queue.enqueue("victim")
    target = f"{site.url}/api/queues/victim/pause"
    attacker = evil(
        {
            # The classic: a form that submits itself (no inline script: CSP-free page here).
            "/form": f'<form id="f" method="POST" action="{target}"></form>'
            '<script src="/submit.js"></script>',
            "/submit.js": 'document.getElementById("f").submit();',
            # A "simple" fetch needs no preflight, so the browser does send it.
            "/fetch": '<script src="/fetch.js"></script>',
            "/fetch.js": f'fetch("{target}", {{method: "POST", mode: "no-cors", '
            'credentials: "include"}).finally(() => { document.title = "sent"; });',
        }
    )
    page = site.page
    with page.expect_response(lambda r: r.url == target) as posted:
        page.goto(f"{attacker.url}/form")
    assert posted.value.status == 403
    assert "cross-site request refused" in posted.value.text()
    with page.expect_event("requestfailed", lambda r: r.url == target) as fetched:
        page.goto(f"{attacker.url}/fetch")
    # The dashboard answered (403), with Cross-Origin-Resource-Policy: the browser hides even
    # that answer from the other site's script.
    assert "BLOCKED_BY_RESPONSE" in (fetched.value.failure or ""), fetched.value.failure
    expect(page).to_have_title("sent")
    assert [q.paused for q in site.queue.client.queues()] == [False]
    # The dashboard's own page does the same thing fine.
    site.open("queues")
    site.row("queue", "victim").get_by_role("button", name="Pause").click()
    expect(site.cell("victim", "state")).to_have_text("paused")


def test_a_page_rebound_to_the_dashboard_cannot_read_it(make_site: Callable[..., Site]) -> None:
    site = make_site()
    port = site.url.rsplit(":", 1)[1]
    # DNS rebinding: evil.test now points at 127.0.0.1, so its pages are "same-origin" with
    # whatever listens there, but they ask for Host evil.test, which is refused.
    response = site.page.goto(f"http://{EVIL}:{port}/")
    assert response is not None and response.status == 403
    expect(site.page.locator("body")).to_contain_text("loopback Host")
    expect(site.page.locator("#nav")).to_have_count(0)


def test_a_wrong_password_is_refused(make_site: Callable[..., Site]) -> None:
    wrong = make_site(auth="admin:s3cret", http_credentials={"username": "admin", "password": "x"})
    response = wrong.page.goto(wrong.url + "/")
    assert response is not None and response.status == 401
    expect(wrong.page.locator("#nav")).to_have_count(0)
    response = wrong.page.goto(wrong.url + "/api/queues")
    assert response is not None and response.status == 401

    right = make_site(
        auth="admin:s3cret", http_credentials={"username": "admin", "password": "s3cret"}
    )
    right.queue.enqueue("mail")
    right.open("queues")
    right.row("queue", "mail").get_by_role("button", name="Pause").click()
    expect(right.cell("mail", "state")).to_have_text("paused")
    assert right.problems == []
