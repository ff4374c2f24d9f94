"""Checks of the seconds arguments every public call takes: a wrong type is a TypeError, NaN and
infinities where they make no sense a ValueError naming the argument, before the core sees them."""

from __future__ import annotations

import datetime as _dt
import math

__all__ = ["delay", "epoch", "job_timeout", "period", "seconds", "timeout"]


def seconds(value: object, name: str) -> float:
    """A number of seconds (int, float or timedelta); NaN is a ValueError."""
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be seconds (int or float) or a timedelta, got {type(value).__name__}"
        )
    out = float(value)
    if math.isnan(out):
        raise ValueError(f"{name} must be a number of seconds, got nan")
    return out


def _finite(value: float, name: str, hint: str = "") -> float:
    if math.isinf(value):
        raise ValueError(f"{name} must be finite, got {value!r}{hint}")
    return value


def delay(value: object, name: str = "delay") -> float:
    """Seconds >= 0, finite (a time centuries away is fine; never is not a delay)."""
    out = _finite(seconds(value, name), name)
    if out < 0:
        raise ValueError(f"{name} must be >= 0 seconds, got {value!r}")
    return out


def period(value: object, name: str = "interval") -> float:
    """Seconds > 0, finite."""
    out = _finite(seconds(value, name), name)
    if out <= 0:
        raise ValueError(f"{name} must be > 0 seconds, got {value!r}")
    return out


def timeout(value: object, name: str = "timeout") -> float | None:
    """None (wait as long as it takes) or finite seconds >= 0, as in concurrent.futures."""
    if value is None:
        return None
    out = _finite(seconds(value, name), name, "; use None to wait without a timeout")
    if out < 0:
        raise ValueError(f"{name} must be >= 0 seconds or None, got {value!r}")
    return out


def job_timeout(value: object) -> float | None:
    """Job(timeout=...): None (no deadline) or finite seconds > 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, got {type(value).__name__}")
    out = float(value)
    if math.isnan(out) or not out > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {value!r}")
    return _finite(out, "timeout", "; use None for no timeout")


def epoch(value: object, name: str = "when") -> float:
    """A datetime or finite epoch seconds."""
    if isinstance(value, _dt.datetime):
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a datetime or epoch seconds, got {type(value).__name__}")
    out = float(value)
    if math.isnan(out) or math.isinf(out):
        raise ValueError(f"{name} must be finite epoch seconds, got {value!r}")
    return out
