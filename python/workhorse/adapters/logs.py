"""Aggregate logging: one stdlib record per execution carrying every line logged during it."""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from contextvars import ContextVar, Token
from datetime import datetime, timezone
from typing import Any

from workhorse.adapters import _options
from workhorse.adapters._wrap import around, final_status, is_failure
from workhorse.adapters.keys import COMMENT, LOGGER, REQUEST_ID, TRACE_ID, WORKER_NUMBER
from workhorse.job import Job
from workhorse.middleware import Adapter, Handler
from workhorse.status import Status

__all__ = ["JobLogger", "aggregate_logging"]

# The lines of the execution running in this thread or task; contextvars keep concurrent
# executions (threads of the executor, asyncio tasks) apart.
_current: ContextVar[JobLogger | None] = ContextVar("workhorse_job_logger", default=None)


def _text(message: str, exc_info: Any) -> str:
    if exc_info is None or exc_info is False:
        return message
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    elif not isinstance(exc_info, tuple):
        exc_info = sys.exc_info()
    if exc_info[0] is None:
        return message
    return message + "\n" + "".join(traceback.format_exception(*exc_info)).rstrip()


class JobLogger:
    """Logger-like object on ctx["logger"]: its lines go into the execution's aggregate record."""

    __slots__ = ("name", "level", "lines")

    def __init__(self, name: str, level: int) -> None:
        self.name = name
        self.level = level
        self.lines: list[dict[str, str]] = []

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging.Logger's name
        return level >= self.level

    def log(self, level: int, msg: object, *args: object, exc_info: Any = None, **_: Any) -> None:
        """Gather one line when level is at least this logger's level."""
        if level < self.level:
            return
        try:
            message = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):  # a bad format string must not fail the handler
            message = f"{msg} {args!r}"
        message = _text(message, exc_info)
        self.lines.append({"level": logging.getLevelName(level), "message": message})

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(logging.DEBUG, msg, *args, **kwargs)

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(logging.INFO, msg, *args, **kwargs)

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(logging.WARNING, msg, *args, **kwargs)

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(logging.ERROR, msg, *args, **kwargs)

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        self.log(logging.ERROR, msg, *args, exc_info=exc_info, **kwargs)

    def critical(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(logging.CRITICAL, msg, *args, **kwargs)


# Stdlib records are captured by a chained LogRecord factory rather than a root handler: a handler
# on the root logger would turn logging.basicConfig() into a no-op and silence logging.lastResort,
# so an unconfigured program would lose its warnings. The factory sees every enabled record, in
# the thread or task that logs it.
_install_lock = threading.Lock()
_factory: Callable[..., logging.LogRecord] | None = None


def _install() -> None:
    global _factory
    with _install_lock:
        previous = logging.getLogRecordFactory()
        if previous is _factory:
            return

        def capturing_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            job_logger = _current.get()
            # The mark keeps a record single when a factory set later chains this one again.
            if job_logger is not None and not hasattr(record, "_workhorse_captured"):
                record.__dict__["_workhorse_captured"] = True
                if record.levelno >= job_logger.level:
                    try:
                        message = record.getMessage()
                    except Exception:  # noqa: BLE001 - logging reports it when it formats
                        message = str(record.msg)
                    job_logger.lines.append(
                        {"level": record.levelname, "message": _text(message, record.exc_info)}
                    )
            return record

        _factory = capturing_factory
        logging.setLogRecordFactory(capturing_factory)


def _record_level(status: int) -> int:
    if is_failure(status):
        return logging.ERROR
    if status >= 400 and status != Status.NO_RESPONSE:
        return logging.WARNING
    return logging.INFO


def aggregate_logging(
    *,
    logger: logging.Logger | str | None = None,
    silent_no_response: bool = False,
    silent_success: bool = False,
    reduced_logging: Callable[[Status, int], bool] | None = None,
    level: int = logging.INFO,
    utc: bool = False,
) -> Adapter:
    """Adapter emitting one record per execution with the lines logged during it.

    Lines come from ctx["logger"] (a JobLogger) and from stdlib logging in the handler's code, at
    `level` or above. The record ("job <handler> <status> in <ms>ms") carries extra={"job": {...}}
    (handler, job_id, status, latency_ms, time, request_id, trace_id, worker_number, comment,
    lines; the README describes each) and is logged at ERROR for timeouts and 5xx, WARNING for
    other 4xx, else INFO. It is skipped for NO_RESPONSE / SUCCESS when silenced, and when
    reduced_logging(status, len(lines)) is false.
    logger is a logging.Logger or a logger name (default "workhorse.jobs").
    """
    out = _options.logger("logger", logger, default="workhorse.jobs")
    if isinstance(level, bool) or not isinstance(level, int):
        raise TypeError(f"level must be a logging level int, got {level!r}")
    if level < 0:
        raise ValueError(f"level must be a logging level >= 0, got {level!r}")
    reduced_logging = _options.callable_or_none("reduced_logging", reduced_logging)
    silent_no_response = _options.flag("silent_no_response", silent_no_response)
    silent_success = _options.flag("silent_success", silent_success)
    utc = _options.flag("utc", utc)
    _install()

    def before(job: Job) -> tuple[JobLogger, Token[JobLogger | None], object, float]:
        if logging.getLogRecordFactory() is not _factory:
            _install()  # someone replaced the factory since
        job_logger = JobLogger(f"workhorse.jobs.{job.handler}", level)
        previous = job.ctx.get(LOGGER)
        job.ctx.set(LOGGER, job_logger)
        return job_logger, _current.set(job_logger), previous, time.perf_counter()

    def after(
        job: Job,
        state: tuple[JobLogger, Token[JobLogger | None], object, float],
        raised: BaseException | None,
    ) -> None:
        job_logger, token, previous, started = state
        latency_ms = (time.perf_counter() - started) * 1000.0
        _current.reset(token)  # before logging: the aggregate record is not one of its own lines
        ctx = job.ctx
        if previous is not None:  # an outer aggregate_logging gathers on
            ctx.set(LOGGER, previous)
        status = final_status(job, raised)
        lines = job_logger.lines
        if (
            (silent_no_response and status == Status.NO_RESPONSE)
            or (silent_success and status == Status.SUCCESS)
            or (reduced_logging is not None and not reduced_logging(status, len(lines)))
        ):
            return
        now = datetime.now(timezone.utc) if utc else datetime.now().astimezone()
        fields = {
            "handler": job.handler,
            "job_id": job.id,
            "status": int(status),
            "latency_ms": latency_ms,
            "time": now.isoformat(),
            # request_id() in the chain gives every record an id; tracing() adds its span's
            # trace id. Kept apart: a request id is not a W3C trace id a backend could look up.
            "request_id": ctx.get(REQUEST_ID),
            "trace_id": ctx.get(TRACE_ID),
            "worker_number": ctx.get(WORKER_NUMBER),
            "comment": ctx.get(COMMENT),
            "lines": lines,
        }
        out.log(
            _record_level(status),
            "job %s %d in %.1fms",
            job.handler,
            int(status),
            latency_ms,
            extra={"job": fields},
        )

    def adapter(handler: Handler) -> Handler:
        return around(handler, before, after)

    return adapter
