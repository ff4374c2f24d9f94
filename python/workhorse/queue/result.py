"""What a queued job's handler returns to say how its run ended (isp-kit bgjobx's results)."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any

from workhorse import _checks, _core

__all__ = ["Result"]


class Result:
    """The outcome of one run of a queued job: return one from the handler (None completes).

    - `Result.complete()`: done, the job is gone.
    - `Result.retry(after)`: a failure with its own delay (counts toward max_fails).
    - `Result.dead(reason)`: straight to the dead set.
    - `Result.reschedule(after=... | cron=..., args=...)`: not a failure; run again later.
    """

    __slots__ = ("kind", "after", "reason", "cron", "args")

    def __init__(
        self,
        kind: str,
        *,
        after: float = 0.0,
        reason: str | None = None,
        cron: str | None = None,
        args: dict[str, Any] | None = None,
    ) -> None:
        self.kind = kind
        self.after = after
        self.reason = reason
        self.cron = cron
        self.args = args

    @classmethod
    def complete(cls) -> Result:
        return cls("complete")

    @classmethod
    def retry(cls, after: float | _dt.timedelta = 0.0) -> Result:
        return cls("retry", after=_checks.delay(after, "after"))

    @classmethod
    def dead(cls, reason: str = "") -> Result:
        if not isinstance(reason, str):
            raise TypeError(f"reason must be a str, got {type(reason).__name__}")
        return cls("dead", reason=reason)

    @classmethod
    def reschedule(
        cls,
        after: float | _dt.timedelta | None = None,
        *,
        cron: str | None = None,
        args: Mapping[str, Any] | None = None,
    ) -> Result:
        if (after is None) == (cron is None):
            raise ValueError("reschedule takes exactly one of after= or cron=")
        if cron is not None:
            if not isinstance(cron, str):
                raise TypeError(f"cron must be a str, got {type(cron).__name__}")
            _core.cron_next(cron, 0.0)  # a bad spec is a ValueError here, not at the ack
        if args is not None and not isinstance(args, Mapping):
            raise TypeError(f"args must be a dict or None, got {type(args).__name__}")
        return cls(
            "reschedule",
            after=0.0 if after is None else _checks.delay(after, "after"),
            cron=cron,
            args=None if args is None else dict(args),
        )

    def __repr__(self) -> str:
        extra = {
            "after": self.after if self.kind in ("retry", "reschedule") and not self.cron else None,
            "cron": self.cron,
            "reason": self.reason,
            "args": self.args,
        }
        shown = ", ".join(f"{k}={v!r}" for k, v in extra.items() if v is not None)
        return f"Result.{self.kind}({shown})"
