"""The `workhorse` command (also `python -m workhorse`): run a worker, enqueue, inspect a queue.

    workhorse worker app.jobs:worker [--url redis://...] [--concurrency 50] [--burst]
    workhorse enqueue send_email '{"to": "a@b.c"}' [--in 30 | --at 2027-01-01T09:00] [--unique]
    workhorse info | dead retry ID|--all | dead delete ID|--all | pause NAME | unpause NAME
    workhorse web [--host 127.0.0.1] [--port 5040] [--auth USER:PASSWORD | TOKEN] [--read-only]

Every option can come from the environment (WORKHORSE_URL, WORKHORSE_NAMESPACE,
WORKHORSE_CONCURRENCY, WORKHORSE_LOG_LEVEL, WORKHORSE_METRICS_PORT, WORKHORSE_GRACE,
WORKHORSE_WEB_HOST, WORKHORSE_WEB_PORT, WORKHORSE_WEB_PASSWORD, WORKHORSE_WEB_READ_ONLY). Errors a
shell user makes (an unreachable queue, a bad MODULE:ATTR, bad JSON) print one line on stderr and
exit non-zero; they never show a traceback.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import inspect
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from workhorse.errors import QueueError, WorkerFailed
from workhorse.queue import Queue
from workhorse.worker import Worker

DEFAULT_WEB_PORT = 5040  # workhorse.web.DEFAULT_PORT, without importing the dashboard here

__all__ = ["main"]

# Exit codes: 1 the queue failed or is unreachable, 2 the command line was wrong (argparse's),
# 70 (EX_SOFTWARE) the worker's core failed: its queue consumer died, so it exits to be restarted.
EXIT_QUEUE, EXIT_USAGE, EXIT_FAILED = 1, 2, 70
# How long a failed worker waits for its cancelled runs before it exits: the bound on the whole
# exit (within 5 s of the failure, RELIABILITY.md row 20) keeps room for the interpreter's exit.
FAILED_STOP_TIMEOUT = 2.0


class CommandError(Exception):
    """A mistake on the command line: printed as one line, exit code 2."""


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"WORKHORSE_{name}", default)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workhorse", description="Run workhorse workers and look into their queues."
    )
    url_help = "queue URL: redis://[:password@]host:port/db (env WORKHORSE_URL; default memory://)"
    namespace_help = "key namespace of the queue (env WORKHORSE_NAMESPACE; default workhorse)"
    parser.add_argument("--url", default=_env("URL", "memory://"), help=url_help)
    parser.add_argument("--namespace", default=_env("NAMESPACE", "workhorse"), help=namespace_help)
    # --url and --namespace also after the command (`workhorse web --url ...`); given there,
    # they win over the ones before it.
    queue_options = argparse.ArgumentParser(add_help=False)
    queue_options.add_argument("--url", default=argparse.SUPPRESS, help=url_help)
    queue_options.add_argument("--namespace", default=argparse.SUPPRESS, help=namespace_help)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = [queue_options]

    worker = commands.add_parser("worker", parents=common, help="run a Worker until SIGINT/SIGTERM")
    worker.add_argument("target", metavar="MODULE:ATTR", help="a wh.Worker, or a factory of one")
    worker.add_argument(
        "--concurrency",
        type=int,
        default=_int_env("CONCURRENCY"),
        help="executions at once, for a factory taking `concurrency` (env WORKHORSE_CONCURRENCY)",
    )
    worker.add_argument("--burst", action="store_true", help="drain what is ready, then exit")
    worker.add_argument("--names", help="claim only these job names (comma separated)")
    worker.add_argument(
        "--log-level", default=_env("LOG_LEVEL", "INFO"), help="logging level (default INFO)"
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        default=_int_env("METRICS_PORT"),
        help="serve /metrics and /ready on 127.0.0.1:PORT (env WORKHORSE_METRICS_PORT)",
    )
    worker.add_argument(
        "--grace",
        type=float,
        default=_float_env("GRACE"),
        help="seconds running jobs get at shutdown (env WORKHORSE_GRACE; the Worker's own default)",
    )

    enqueue = commands.add_parser("enqueue", parents=common, help="enqueue one job")
    enqueue.add_argument("name", help="job name")
    enqueue.add_argument("args", nargs="?", default="{}", help="arguments as a JSON object")
    when = enqueue.add_mutually_exclusive_group()
    when.add_argument("--in", dest="delay", type=float, help="run after SECONDS")
    when.add_argument("--at", help="run at an ISO 8601 time (naive = local time)")
    enqueue.add_argument(
        "--unique", action="store_true", help="skip if an equal job is already waiting"
    )

    commands.add_parser("info", parents=common, help="queues, worker pools and busy workers")

    dead = commands.add_parser("dead", parents=common, help="retry or delete dead jobs")
    dead.add_argument("action", choices=["retry", "delete"])
    target = dead.add_mutually_exclusive_group(required=True)
    target.add_argument("id", nargs="?", help="one dead job's id")
    target.add_argument("--all", action="store_true", help="every dead job")

    for name, text in (("pause", "stop claiming a job name"), ("unpause", "claim it again")):
        sub = commands.add_parser(name, parents=common, help=text)
        sub.add_argument("name", help="job name")

    web = commands.add_parser(
        "web",
        parents=common,
        help="serve the dashboard",
        description="Serve the dashboard (queues, busy workers, worker pools, scheduled, retry "
        "and dead jobs, a live chart) until SIGINT/SIGTERM. It binds 127.0.0.1; any other "
        "address needs --auth.",
    )
    web.add_argument(
        "--host",
        default=_env("WEB_HOST", "127.0.0.1"),
        help="address to listen on (env WORKHORSE_WEB_HOST; default 127.0.0.1: this machine only)",
    )
    web_port = _int_env("WEB_PORT")
    web.add_argument(
        "--port",
        type=int,
        default=DEFAULT_WEB_PORT if web_port is None else web_port,
        help=f"port (env WORKHORSE_WEB_PORT; default {DEFAULT_WEB_PORT})",
    )
    web.add_argument(
        "--auth",
        default=_env("WEB_PASSWORD"),
        metavar="USER:PASSWORD|TOKEN",
        help="require HTTP Basic USER:PASSWORD, or a token (Bearer, or the Basic password of any "
        "user); needed on any host but loopback. Prefer the environment, WORKHORSE_WEB_PASSWORD: "
        "a command line is visible to other users",
    )
    web.add_argument(
        "--read-only",
        action="store_true",
        default=_bool_env("WEB_READ_ONLY"),
        help="refuse every change (retry, delete, pause) and hide the buttons "
        "(env WORKHORSE_WEB_READ_ONLY=1)",
    )
    return parser


def _bool_env(name: str) -> bool:
    value = _env(name)
    if value is None or value.strip().lower() in ("", "0", "false", "no", "off"):
        return False
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    _die(f"WORKHORSE_{name} must be 1 or 0 (true or false), got {value!r}", EXIT_USAGE)


def _int_env(name: str) -> int | None:
    value = _env(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        _die(f"WORKHORSE_{name} must be an integer, got {value!r}", EXIT_USAGE)


def _float_env(name: str) -> float | None:
    value = _env(name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        _die(f"WORKHORSE_{name} must be a number, got {value!r}", EXIT_USAGE)


def _die(message: str, code: int) -> NoReturn:
    print(f"workhorse: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "web":
            _check_web(args)
        queue = Queue.from_url(args.url, namespace=args.namespace)
        if args.command == "worker":
            return _worker(args, queue)
        if args.command == "web":
            return _web(args, queue)
        return _client_command(args, queue)
    except CommandError as exc:
        _die(str(exc), EXIT_USAGE)
    except (QueueError, ValueError, TypeError) as exc:
        code = EXIT_QUEUE if isinstance(exc, QueueError) else EXIT_USAGE
        _die(f"{exc}", code)


# -- client commands -----------------------------------------------------------------------------


def _client_command(args: argparse.Namespace, queue: Queue) -> int:
    client = queue.client
    if args.command == "enqueue":
        job = _enqueue(args, queue)
        if job is None:
            print("an equal job is already waiting: not enqueued")
        else:
            print(json.dumps(job._asdict()))
    elif args.command == "info":
        _info(queue)
    elif args.command == "dead":
        if args.action == "retry":
            n = client.retry_all_dead_jobs() if args.all else int(client.retry_dead_job(args.id))
        else:
            n = client.delete_all_dead_jobs() if args.all else int(client.delete_dead_job(args.id))
        if not args.all and n == 0:
            raise CommandError(f"no dead job with id {args.id!r}")
        print(f"{'retried' if args.action == 'retry' else 'deleted'} {n} dead job(s)")
    elif args.command == "pause":
        client.pause(args.name)
        print(f"paused {args.name}")
    elif args.command == "unpause":
        client.unpause(args.name)
        print(f"unpaused {args.name}")
    return 0


def _enqueue(args: argparse.Namespace, queue: Queue) -> Any:
    try:
        job_args = json.loads(args.args)
    except ValueError as exc:
        raise CommandError(f"JSON_ARGS is not valid JSON: {exc}") from None
    if not isinstance(job_args, dict):
        raise CommandError(f"JSON_ARGS must be a JSON object, got {type(job_args).__name__}")
    if args.at is not None:
        try:
            when = _dt.datetime.fromisoformat(args.at)
        except ValueError:
            raise CommandError(f"--at must be an ISO 8601 time, got {args.at!r}") from None
        # Due by Redis's clock, not this machine's (which may be off).
        if args.unique:
            return queue.enqueue_unique_at(args.name, when, job_args)
        return queue.enqueue_at(args.name, when, job_args)
    delay = args.delay or 0.0
    if args.unique:
        return queue.enqueue_unique_in(args.name, delay, job_args)
    return queue.enqueue_in(args.name, delay, job_args)


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "-" if value is None else str(value)


def _ago(epoch: float | None) -> str | None:
    return None if epoch is None else f"{max(0.0, time.time() - epoch):.1f}s ago"


def _info(queue: Queue) -> None:
    client = queue.client
    queues = client.queues()
    print("queues")
    print(
        _table(
            ["name", "ready", "scheduled", "retry", "dead", "running", "latency_s", "paused"],
            [
                [q.name, q.ready, q.scheduled, q.retry, q.dead, q.running, q.latency, q.paused]
                for q in queues
            ],
        )
        if queues
        else "  (none)"
    )
    pools = client.worker_pools()
    print("\nworker pools")
    print(
        _table(
            ["worker", "host", "pid", "concurrency", "names", "heartbeat"],
            [
                [p.worker_id, p.host, p.pid, p.concurrency, ",".join(p.names), _ago(p.heartbeat_at)]
                for p in pools
            ],
        )
        if pools
        else "  (none)"
    )
    busy = client.busy_workers()
    print("\nbusy workers")
    print(
        _table(
            ["worker", "job", "name", "started", "checkin", "checkin_at"],
            [
                [b.worker_id, b.job_id, b.name, _ago(b.started_at), b.checkin, _ago(b.checkin_at)]
                for b in busy
            ],
        )
        if busy
        else "  (none)"
    )


# -- worker ---------------------------------------------------------------------------------------


def load_worker(target: str, concurrency: int | None, queue: Queue) -> Worker:
    """The Worker MODULE:ATTR names: an instance, or a factory called with the options it takes."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise CommandError(f"expected MODULE:ATTR (e.g. app.jobs:worker), got {target!r}")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CommandError(f"cannot import {module_name!r}: {exc}") from None
    try:
        obj: Any = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise CommandError(f"module {module_name!r} has no attribute {attr!r}") from None
    if isinstance(obj, Worker):
        if concurrency is not None and concurrency != obj.concurrency:
            raise CommandError(
                f"{target} is a Worker with concurrency {obj.concurrency}; --concurrency needs "
                "a factory that takes `concurrency`"
            )
        worker = obj
    elif callable(obj):
        kwargs: dict[str, Any] = {}
        params = inspect.signature(obj).parameters
        if "queue" in params:
            kwargs["queue"] = queue
        if concurrency is not None:
            if "concurrency" not in params:
                raise CommandError(f"{target} takes no `concurrency`; drop --concurrency")
            kwargs["concurrency"] = concurrency
        worker = obj(**kwargs)
        if not isinstance(worker, Worker):
            raise CommandError(f"{target}() returned {type(worker).__name__}, not a wh.Worker")
    else:
        raise CommandError(f"{target} is a {type(obj).__name__}, not a wh.Worker or a factory")
    if worker._queue is None:
        if worker._started:
            raise CommandError(f"{target} was started without a queue")
        worker._queue = queue  # the command's --url: the Worker claims from it
    return worker


def _worker(args: argparse.Namespace, queue: Queue) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    worker = load_worker(args.target, args.concurrency, queue)
    if args.grace is not None:
        if not args.grace >= 0:
            raise CommandError(f"--grace must be >= 0 seconds, got {args.grace}")
        worker._grace = args.grace
    if args.names:
        names = {n.strip() for n in args.names.split(",") if n.strip()}
        unknown = sorted(names - set(worker._handlers))
        if unknown:
            raise CommandError(f"--names lists names with no handler: {', '.join(unknown)}")
        worker._claim_only = names
    if args.metrics_port is not None:
        _serve_metrics(args.metrics_port, worker)
    log = logging.getLogger("workhorse")
    if args.burst:
        worker.start()
        try:
            worker.drain()
        except WorkerFailed:
            return _failed(worker)
        return 0 if worker.stop(timeout=worker._grace + 5) else EXIT_QUEUE
    stop = threading.Event()
    signals = 0

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log.warning("second signal: exiting without waiting for running jobs")
            os._exit(128 + signum)
        log.info("%s: stopping (a second signal exits at once)", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    worker.start()
    log.info("%s claiming %s from %s", worker.name, sorted(worker._handlers), queue.url)
    while not stop.wait(0.2):
        if worker.failed is not None:
            return _failed(worker)
    clean = worker.stop(timeout=worker._grace + 5)
    return 0 if clean else EXIT_QUEUE


def _failed(worker: Worker) -> int:
    # The worker logged the failure (CRITICAL); its running jobs were cancelled. Give them a
    # moment to end and be released, then exit so that a supervisor restarts the process.
    worker.stop(timeout=FAILED_STOP_TIMEOUT)
    return EXIT_FAILED


# -- web ------------------------------------------------------------------------------------------


def _check_web(args: argparse.Namespace) -> None:
    """The web command's own mistakes, found before the queue is opened."""
    from workhorse.web.security import Credentials, is_loopback

    if not 0 <= args.port <= 65535:
        raise CommandError(f"--port must be in 0..65535, got {args.port}")
    if args.auth is not None:
        try:
            Credentials(args.auth)
        except ValueError as exc:
            raise CommandError(f"--auth (or WORKHORSE_WEB_PASSWORD): {exc}") from None
    elif not is_loopback(args.host):
        raise CommandError(
            f"refusing to serve the dashboard on {args.host} without a password: set "
            "WORKHORSE_WEB_PASSWORD (or --auth USER:PASSWORD) or bind 127.0.0.1"
        )


def _web(args: argparse.Namespace, queue: Queue) -> int:
    from workhorse.web import serve_dashboard

    try:
        server = serve_dashboard(
            queue, args.host, args.port, auth=args.auth, read_only=args.read_only
        )
    except OSError as exc:
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.set())
    notes = [f"namespace {queue.namespace}"]
    if queue.url.startswith("memory:"):
        notes.append("memory:// is this process's own store: give --url redis://...")
    notes += ["password required"] if args.auth else []
    notes += ["read-only"] if args.read_only else []
    print(f"workhorse dashboard on {server.url}/ ({', '.join(notes)}); Ctrl-C stops it", flush=True)
    while not stop.wait(0.2):
        pass
    server.close()
    return 0


def _serve_metrics(port: int, worker: Worker) -> None:
    try:
        from workhorse.adapters import register_core_collector, register_queue_collector
        from workhorse.server import serve
    except ImportError as exc:  # pragma: no cover - prometheus-client missing
        raise CommandError(f"--metrics-port needs prometheus-client: {exc}") from None
    register_core_collector()
    if worker._queue is not None:
        register_queue_collector(worker._queue)
    serve(port=port)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
