"""Checks of adapter options, run when an adapter is built: a wrong option is a TypeError or a
ValueError naming it there, never an error in every execution the adapter wraps later."""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["callable_or_none", "flag", "logger"]


def _kind(value: object) -> str:
    return type(value).__name__


def flag(name: str, value: object) -> bool:
    """A bool option (a truthy string such as "no" must not switch it on)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {_kind(value)} {value!r}")
    return value


def logger(name: str, value: object, default: str) -> logging.Logger:
    """A logging.Logger, or a logger name for logging.getLogger(); None is the default's."""
    if value is None:
        return logging.getLogger(default)
    if isinstance(value, str):
        return logging.getLogger(value)
    if isinstance(value, logging.Logger):
        return value
    if isinstance(value, logging.LoggerAdapter):
        # LoggerAdapter.process() replaces a call's extra with its own, dropping the job fields.
        raise TypeError(
            f"{name} must be a logging.Logger or a logger name, got a LoggerAdapter; "
            f"pass its logger ({name}=adapter.logger)"
        )
    raise TypeError(f"{name} must be a logging.Logger or a logger name, got {_kind(value)}")


def callable_or_none(name: str, value: Any) -> Any:
    """A callable, or None."""
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, got {_kind(value)}")
    return value
