"""How a queued run's end becomes the backend's outcome: the retry and dead rules.

- returned None or `Result.complete()`, status < 400: complete;
- `Result.reschedule(...)`: not a failure, scheduled again (args replaced if given);
- `Result.dead(reason)`, or `ArgError` (BAD_REQUEST: retrying cannot fix its args): dead at once;
- an exception, a timeout or `Result.retry(after)`: a failure: after `max_fails` failed runs the
  job is dead (deleted with `skip_dead`), else it is retried after the backoff (or `after`);
- cancelled by a stopping worker past its grace: released, the attempt not counted.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable

from workhorse import _core
from workhorse.job import Context
from workhorse.queue.job import QueueJob
from workhorse.queue.queue import encode_args
from workhorse.queue.result import Result
from workhorse.status import Status

__all__ = ["HandlerOptions", "default_backoff", "outcome_of"]

# (outcome, delay seconds, text, args JSON): what Dispatcher.done_claim takes.
Outcome = tuple[str, float, "str | None", "str | None"]


def default_backoff(job: QueueJob) -> float:
    """gocraft's curve: fails^4 + 15 + rand(30) * (fails + 1) seconds, fails counting this one."""
    fails = job.fails + 1
    return float(fails**4 + 15 + random.randrange(30) * (fails + 1))


@dataclasses.dataclass(frozen=True)
class HandlerOptions:
    """@worker.handler(...) options of a queued job name."""

    priority: int = 1
    max_fails: int = 4
    skip_dead: bool = False
    max_concurrency: int = 0
    backoff: Callable[[QueueJob], float] | None = None
    timeout: float | None = None


def _error_text(ctx: Context) -> str:
    error = ctx.error
    if error is None:
        return f"status {int(ctx.status)}"
    return f"{type(error).__name__}: {error}"


def _failure(job: QueueJob, opts: HandlerOptions, text: str, delay: float | None) -> Outcome:
    if job.fails + 1 >= opts.max_fails:
        return ("discard" if opts.skip_dead else "dead_failed", 0.0, text, None)
    if delay is None:
        backoff = opts.backoff or default_backoff
        try:
            delay = float(backoff(job))
        except Exception as exc:  # noqa: BLE001 - a broken backoff must not lose the job
            text = f"{text} (backoff raised {type(exc).__name__}: {exc}; retried at once)"
            delay = 0.0
        if not delay >= 0 or delay == float("inf"):
            delay = 0.0
    return ("retry", delay, text, None)


def outcome_of(job: QueueJob, ctx: Context, opts: HandlerOptions, released: bool) -> Outcome:
    """The outcome of one run (see the module docs); `released`: cancelled at stop."""
    if released:
        return ("release", 0.0, None, None)
    result = ctx._result
    status = ctx.status
    if isinstance(result, Result):
        kind = result.kind
        if kind == "retry":
            return _failure(job, opts, "retry requested by the handler", result.after)
        if kind == "dead":
            return ("dead", 0.0, result.reason or "dead requested by the handler", None)
        if status < 400 and kind == "reschedule":
            delay = result.after
            if result.cron is not None:
                # The next slot by the backend's clock (Redis's TIME), which the delay is
                # counted from: a worker whose own clock is off still hits the slot.
                try:
                    now = job._store.now()
                except _core.QueueError:
                    now = time.time()
                delay = max(0.0, _core.cron_next(result.cron, now) - now)
            args = None if result.args is None else encode_args(result.args)
            return ("reschedule", delay, None, args)
    if status < 400:
        return ("complete", 0.0, None, None)
    if status is Status.BAD_REQUEST:
        return ("dead_failed", 0.0, _error_text(ctx), None)
    return _failure(job, opts, _error_text(ctx), None)
