"""Screenshots of the dashboard for the README: `make screenshots` (docs/dashboard-*.png).

Fills a memory:// queue with a little of everything (two worker pools, jobs running with
check-ins, scheduled, retrying and dead jobs, a paused name, traffic for the chart), serves the
dashboard on a free loopback port and has Debian's chromium (through Playwright) take a picture
of each page. Nothing leaves this machine.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import threading
import time
from pathlib import Path

import workhorse as wh
from workhorse.web import serve_dashboard

DOCS = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
PAGES = ["queues", "busy", "workers", "scheduled", "retry", "dead"]


def populate(queue: wh.Queue, stop: threading.Event) -> list[wh.Worker]:
    """Workers and jobs that give every page something to show; traffic until `stop`."""
    rng = random.Random(7)

    def send_email(job: wh.Job) -> wh.Result | None:
        time.sleep(rng.uniform(0.02, 0.1))
        if rng.random() < 0.08:
            raise ConnectionError("smtp.example.com: 421 try again later")
        return None

    def charge_card(job: wh.Job) -> wh.Result | None:
        if job.args["amount"] > 900:
            return wh.Result.dead("card declined: insufficient funds")
        return None

    def build_report(job: wh.Job) -> None:
        assert isinstance(job, wh.QueueJob)
        for i in range(1, 1000):
            job.checkin(f"rendered page {i % 40 + 1} of 40")
            if stop.wait(0.5):
                return

    quiet = logging.getLogger("screenshots.quiet")  # the failures are on purpose
    quiet.disabled = True
    web = wh.Worker(concurrency=10, queue=queue, name="web-1", logger=quiet)
    # Failed emails wait ten minutes in the retry set; a declined card is dead at once.
    web.handler("send_email", backoff=lambda job: 600)(send_email)
    web.handler("charge_card")(charge_card)
    reports = wh.Worker(concurrency=2, queue=queue, name="reports-1", logger=quiet)
    reports.register("build_report", build_report)
    for worker in (web, reports):
        worker.start()

    queue.enqueue_many([("build_report", {"customer": c}) for c in ("acme", "globex")])
    for i in range(6):
        queue.enqueue_in("send_newsletter", 600 + 60 * i, {"issue": 40 + i, "list": "weekly"})
    queue.enqueue_in("cleanup_sessions", 3600, {"older_than_days": 30})
    queue.enqueue_many([("charge_card", {"order": 1000 + i, "amount": 950 + i}) for i in range(4)])
    queue.enqueue_many([("resize_image", {"image": f"img_{i}.png", "width": 64}) for i in range(7)])
    queue.client.pause("resize_image")

    def traffic() -> None:
        start = time.monotonic()
        n = 0
        while not stop.is_set():
            t = time.monotonic() - start
            per_tick = int(6 + 5 * math.sin(t / 3.0) + rng.randint(0, 3))
            queue.enqueue_many(
                [("send_email", {"to": f"user{n + k}@example.com"}) for k in range(per_tick)]
            )
            n += per_tick
            stop.wait(0.1)

    threading.Thread(target=traffic, daemon=True).start()
    return [web, reports]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="memory://screenshots", help="queue URL")
    parser.add_argument("--seconds", type=int, default=62, help="traffic before the chart shot")
    parser.add_argument("--out", type=Path, default=DOCS, help="where the PNGs go")
    args = parser.parse_args()

    from playwright.sync_api import expect, sync_playwright

    queue = wh.Queue.from_url(args.url, namespace="shop")
    stop = threading.Event()
    workers = populate(queue, stop)
    server = serve_dashboard(queue, port=0)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM)
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            page.goto(server.url + "/#/queues")
            page.wait_for_function(
                f"() => Number(document.getElementById('chart').dataset.points) >= "
                f"{args.seconds - 2}",
                timeout=(args.seconds + 30) * 1000,
            )
            page.screenshot(path=str(args.out / "dashboard-queues.png"), full_page=True)
            for name in PAGES[1:]:
                page.goto(f"{server.url}/#/{name}")
                expect(page.locator(f"main[data-page={name}]")).to_be_visible()
                page.screenshot(path=str(args.out / f"dashboard-{name}.png"), full_page=True)
            browser.close()
    finally:
        stop.set()
        server.close()
        for worker in workers:
            worker.stop(timeout=2)
    print(f"screenshots in {args.out}")


if __name__ == "__main__":
    main()
