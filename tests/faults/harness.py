"""The fault harness (issue 9, RELIABILITY.md section 4): workers as real processes, a redis-server
of each test's own, and a ledger outside Redis as the ground truth.

- `App` writes a small worker module into the test's directory and starts it as a subprocess,
  either through the `workhorse worker` command or as a script that holds a Worker.
- Every handler appends one JSON line per phase to the ledger file: job id, attempt (`fails`),
  pid, lease token where the test needs it, phase ("start", "end", ...) and wall time. Appends of
  one short line with O_APPEND are atomic, so several processes share one file.
- Short parameters: lease L, reaper period R, grace G; the recovery bound is B = L + R + 2 s.
- Failpoints (rust/src/failpoints.rs) crash or panic a worker at a named place in the core:
  `env={"WORKHORSE_FAILPOINTS": "after_claim=exit"}`; `fired_at` reads when one fired from the
  process's stderr. `app.gate(name)` in a holder's `extra` parks it, started up and connected,
  until the test calls `app.open_gate(name)`: its start is then not the test's slowest step.
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import workhorse as wh

LEASE, REAPER, GRACE = 1.0, 0.2, 0.5
BOUND = LEASE + REAPER + 2.0

# The worker module every process imports: `make(queue=..., concurrency=...)` builds the Worker.
APP = textwrap.dedent(
    """
    import json, os, sys, time
    import workhorse as wh

    LEDGER = os.environ["LEDGER"]

    def note(job, phase, **extra):
        line = json.dumps({"id": job.id, "fails": job.fails, "pid": os.getpid(),
                           "phase": phase, "t": time.time(), **extra}) + "\\n"
        fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def gate(name):
        open(name + ".ready", "w").close()
        while not os.path.exists(name + ".go"):
            time.sleep(0.001)

    def make(concurrency=4, queue=None):
        worker = wh.Worker(concurrency=concurrency, queue=queue, grace=float(
            os.environ.get("GRACE", "0.5")))

        @worker.handler("slow", max_fails=int(os.environ.get("MAX_FAILS", "5")))
        def slow(job):
            note(job, "start")
            seconds = job.args.get("seconds", 0)
            if job.fails:  # a re-run may be told to be quick
                seconds = job.args.get("retry_seconds", seconds)
            # On its context, not time.sleep: libfaketime (row 19) makes time.sleep fail when
            # it leaves the monotonic clock alone.
            job.ctx.wait_cancelled(seconds)
            note(job, "end", cancelled=job.ctx.cancelled)

        return worker
    """
)


# libfaketime (Debian: `apt-get install faketime`; .ci/run installs it), for a process whose wall
# clock is off (row 19). Its monotonic clock is left alone, so only wall time is skewed.
FAKETIME_LIB = next(
    iter(
        sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
        + sorted(glob.glob("/usr/lib/faketime/libfaketime.so.1"))
        + sorted(glob.glob("/usr/local/lib/faketime/libfaketime.so.1"))
    ),
    None,
)


def skewed(offset: str) -> dict[str, str]:
    """Environment for a child process whose wall clock is `offset` off ("+60s", "-60s")."""
    assert FAKETIME_LIB is not None
    return {
        "LD_PRELOAD": FAKETIME_LIB,
        "FAKETIME": offset,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


def wait_for(pred: Callable[[], object], timeout: float, interval: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(interval)
    return bool(pred())


class App:
    """The worker module, its ledger and its namespace on one test's redis-server."""

    def __init__(self, directory: Path, url: str, ns: str) -> None:
        self.cwd = directory
        self.url = url
        self.ns = ns
        self.ledger_path = directory / "ledger.jsonl"
        (directory / "app.py").write_text(APP)
        self.env = {**os.environ, "LEDGER": str(self.ledger_path), "PYTHONPATH": str(directory)}

    def queue(self, lease: float = LEASE, reaper: float = REAPER, **kwargs: Any) -> wh.Queue:
        return wh.Queue.from_url(
            self.url, namespace=self.ns, lease=lease, reaper_interval=reaper, **kwargs
        )

    def ledger(self) -> list[dict[str, Any]]:
        try:
            with open(self.ledger_path) as f:
                return [json.loads(line) for line in f if line.endswith("\n")]
        except FileNotFoundError:
            return []

    def phases(self, phase: str) -> list[dict[str, Any]]:
        return [e for e in self.ledger() if e["phase"] == phase]

    def gated(self, name: str) -> bool:
        """Whether the holder parked by `app.gate(name)` got there (started and connected)."""
        return (self.cwd / f"{name}.ready").exists()

    def open_gate(self, name: str) -> None:
        (self.cwd / f"{name}.go").touch()

    def command(self, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """`workhorse worker app:make` as a subprocess (its own stdout/stderr pipes)."""
        return subprocess.Popen(
            [sys.executable, "-m", "workhorse", "--url", self.url, "--namespace", self.ns,
             "worker", "app:make", "--log-level", "WARNING", *extra],
            cwd=self.cwd,
            env={**self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def script(
        self, name: str, body: str, env: dict[str, str] | None = None, **popen: Any
    ) -> subprocess.Popen[str]:
        """Run `body` (dedented) as a script in the app's directory."""
        path = self.cwd / f"{name}.py"
        path.write_text(textwrap.dedent(body))
        return subprocess.Popen(
            [sys.executable, str(path)], cwd=self.cwd, env={**self.env, **(env or {})},
            text=True, **popen,
        )

    def holder(self, name: str, lease: float = LEASE, reaper: float = REAPER,
               concurrency: int = 4, extra: str = "", **popen: Any) -> subprocess.Popen[str]:
        """A process holding a started Worker of app.make on this queue until it is killed."""
        return self.script(
            name,
            f"""
            import time, app, workhorse as wh
            q = wh.Queue.from_url({self.url!r}, namespace={self.ns!r}, lease={lease},
                                  reaper_interval={reaper})
            w = app.make(concurrency={concurrency}, queue=q)
            {extra}
            w.start()
            time.sleep(600)
            """,
            **popen,
        )


def fired_at(stderr: str, name: str) -> float:
    """The wall time failpoint `name` fired at, from the line the core writes to stderr first."""
    found = re.findall(rf"workhorse: failpoint {name}: \S+ at ([0-9.]+)", stderr)
    assert found, f"failpoint {name} never fired:\n{stderr[-2000:]}"
    return float(found[0])


def reap(proc: subprocess.Popen[Any]) -> None:
    """Make sure a child is gone (SIGCONT first, in case a test left it stopped)."""
    import signal

    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        proc.kill()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass
